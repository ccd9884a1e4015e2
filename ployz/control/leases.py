"""Lease rules shared by every lease, wherever it is stored.

These are pure functions from the stored lease (or none) to the next one; the control plane runs
them inside a compare-and-swap loop, so two acquisitions can never both succeed on the same stored
version. A lease is never deleted: released and expired leases stay so the next fencing token can
follow the last one.

Clocks: expiry compares wall-clock times written by different machines, so lease safety assumes
their clocks agree to well within a TTL (ployz uses 30-minute TTLs renewed every 10 minutes).
Fencing does not depend on clocks: a commit carrying a superseded token is always refused.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from ployz.control.errors import InvalidArgument, InvalidName, LockHeld, StaleFencingToken
from ployz.control.models import Lease

_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}"
_LEASE_NAME_RE = re.compile(rf"^{_SEGMENT}(/{_SEGMENT})*$")
DEPLOY_LOCK_PREFIX = "deploy/"


def deploy_lock_name(namespace: str) -> str:
    """The name of a namespace's deploy lock, the lease that ``commit`` checks."""
    return f"{DEPLOY_LOCK_PREFIX}{namespace}"


def check_lease_name(name: str) -> str:
    if not isinstance(name, str) or not _LEASE_NAME_RE.match(name):
        raise InvalidName("lease name", str(name), "'/'-separated identifiers")
    return name


def check_ttl(ttl: float) -> timedelta:
    if not ttl > 0:
        raise InvalidArgument(f"lease ttl must be positive seconds, got {ttl!r}")
    return timedelta(seconds=ttl)


def acquire(current: Lease | None, name: str, holder: str, ttl: float, now: datetime) -> Lease:
    """The lease after ``holder`` acquires ``name``.

    The same holder may take its own unexpired lease again (a re-run of an interrupted deploy):
    it gets a new token and its old token becomes stale.
    """
    duration = check_ttl(ttl)
    if not holder:
        raise InvalidArgument("lease holder must not be empty")
    if current is not None and current.is_held(now) and current.holder != holder:
        raise LockHeld(name, current.holder, current.expires_at)
    token = current.token + 1 if current is not None else 1
    return Lease(name=name, holder=holder, token=token, acquired_at=now, expires_at=now + duration)


def require_current(current: Lease | None, name: str, token: int, now: datetime) -> Lease:
    """Return the lease if ``token`` is its token and it is held now, else raise."""
    if current is not None and current.token == token and current.is_held(now):
        return current
    raise StaleFencingToken(name, token, describe(current, now))


def renew(current: Lease | None, name: str, token: int, ttl: float, now: datetime) -> Lease:
    duration = check_ttl(ttl)
    lease = require_current(current, name, token, now)
    return lease.model_copy(update={"expires_at": now + duration})


def release(current: Lease | None, name: str, token: int, now: datetime) -> Lease:
    """The lease after its holder gives it up.

    Releasing a lease that already expired (or was released) without anyone taking it since is
    accepted: it is what a cleanup after a long failure does, and it cannot harm anyone.
    """
    if current is None or current.token != token:
        raise StaleFencingToken(name, token, describe(current, now))
    if not current.is_held(now):
        return current
    return current.model_copy(update={"released": True, "expires_at": now})


def describe(lease: Lease | None, now: datetime) -> str:
    """Say who holds a lease now, for error messages."""
    if lease is None:
        return "the lock was never acquired"
    when = lease.expires_at.isoformat(timespec="seconds")
    if lease.released:
        return f"token {lease.token} ({lease.holder!r}) released it at {when}"
    if not lease.is_held(now):
        return f"token {lease.token} ({lease.holder!r}) expired at {when}"
    return f"token {lease.token} is held by {lease.holder!r} until {when}"
