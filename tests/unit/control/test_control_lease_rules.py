"""The pure lease rules: who may acquire, which token comes next, what a stale token is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ployz.control import InvalidArgument, LockHeld, StaleFencingToken
from ployz.control.leases import acquire, describe, release, renew, require_current

T0 = datetime(2030, 1, 1, tzinfo=UTC)
NAME = "deploy/shop"


def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_first_acquisition_gets_token_one() -> None:
    lease = acquire(None, NAME, "a", 30, T0)
    assert (lease.token, lease.holder, lease.expires_at) == (1, "a", later(30))


def test_another_holder_waits_until_expiry_then_gets_the_next_token() -> None:
    lease = acquire(None, NAME, "a", 30, T0)
    with pytest.raises(LockHeld):
        acquire(lease, NAME, "b", 30, later(29.9))
    assert acquire(lease, NAME, "b", 30, later(30)).token == 2


def test_token_follows_a_released_lease() -> None:
    lease = release(acquire(None, NAME, "a", 30, T0), NAME, 1, later(1))
    assert lease.released and not lease.is_held(later(1))
    assert acquire(lease, NAME, "b", 30, later(2)).token == 2


def test_renew_needs_the_current_unexpired_token() -> None:
    lease = acquire(None, NAME, "a", 30, T0)
    assert renew(lease, NAME, 1, 30, later(20)).expires_at == later(50)
    with pytest.raises(StaleFencingToken):
        renew(lease, NAME, 2, 30, later(20))
    with pytest.raises(StaleFencingToken, match="expired"):
        renew(lease, NAME, 1, 30, later(31))


def test_release_of_an_expired_lease_is_accepted_but_not_with_another_token() -> None:
    lease = acquire(None, NAME, "a", 30, T0)
    assert release(lease, NAME, 1, later(40)) == lease
    with pytest.raises(StaleFencingToken, match="never acquired"):
        release(None, NAME, 1, T0)
    with pytest.raises(StaleFencingToken):
        release(lease, NAME, 7, later(1))


def test_require_current_and_describe() -> None:
    lease = acquire(None, NAME, "a", 30, T0)
    assert require_current(lease, NAME, 1, later(1)) == lease
    assert "held by 'a'" in describe(lease, later(1))
    assert "expired" in describe(lease, later(31))


@pytest.mark.parametrize("ttl", [0, -5])
def test_ttl_must_be_positive(ttl: float) -> None:
    with pytest.raises(InvalidArgument):
        acquire(None, NAME, "a", ttl, T0)


def test_holder_must_be_named() -> None:
    with pytest.raises(InvalidArgument):
        acquire(None, NAME, "", 30, T0)


operations = st.lists(
    st.tuples(
        st.sampled_from(["acquire", "renew", "release"]),
        st.sampled_from(["a", "b", "c"]),
        st.floats(min_value=0, max_value=40),  # seconds since the previous operation
        st.floats(min_value=0.5, max_value=60),  # ttl
    ),
    max_size=40,
)


@given(operations)
def test_any_history_gives_growing_tokens_and_one_holder(history) -> None:
    """Whatever happens, a successful acquisition gets the previous token plus one, an
    acquisition is refused exactly while another holder's lease runs, and only the holder of
    the newest token can renew or release."""
    lease, now, tokens = None, T0, []
    for operation, holder, elapsed, ttl in history:
        now += timedelta(seconds=elapsed)
        before = lease
        try:
            if operation == "acquire":
                lease = acquire(lease, NAME, holder, ttl, now)
                assert before is None or not before.is_held(now) or before.holder == holder
                tokens.append(lease.token)
            elif lease is not None:
                # A holder acts with the token it would have if it were the last acquirer.
                token = lease.token if lease.holder == holder else lease.token - 1
                if operation == "renew":
                    lease = renew(lease, NAME, token, ttl, now)
                else:
                    lease = release(lease, NAME, token, now)
                assert lease.holder == holder
        except LockHeld:
            assert before is not None and before.is_held(now) and before.holder != holder
        except StaleFencingToken:
            assert lease == before
    assert tokens == list(range(1, len(tokens) + 1))
