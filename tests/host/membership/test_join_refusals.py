"""``join_machine`` refuses bad joins before it changes anything: every refusal here comes before
the agent would start, so they run on the host against a real SQLite control plane (the
successful join, which brings up kernel WireGuard, is in the VM's e2e suite)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.control import DuplicateWireGuardKey, InviteUsed, open_control_plane
from ployz.deploy.membership.errors import MembershipError
from ployz.deploy.membership.invitation import invite
from ployz.deploy.membership.joining import JoinOptions, join_machine
from ployz.deploy.membership.tokens import ExpiredToken, ForgedToken, MalformedToken, issue, parse
from ployz.net.keys import generate_private_key, public_key_of
from ployz.transfer.keys import public_key_text

LOCAL_ENDPOINT = "127.0.0.1:51999"


@pytest.fixture
def operator() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def machine_a_key() -> str:
    return generate_private_key()


@pytest.fixture
def control_url(tmp_path: Path, operator: Ed25519PrivateKey, machine_a_key: str) -> str:
    """A cluster with its first machine, as ``machine init`` leaves the control plane."""
    url = f"sqlite:///{tmp_path / 'control.db'}"
    with open_control_plane(url) as cp:
        cp.create_cluster("test", (public_key_text(operator.public_key()),))
        cp.add_machine("machine-a", public_key_of(machine_a_key), "10.0.0.1:51820")
    return url


def snapshot(url: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        return db.execute("SELECT * FROM documents ORDER BY kind, key").fetchall()


def attempt(tmp_path: Path, url: str, token: str, machine_id: str = "machine-b",
            endpoint: str = LOCAL_ENDPOINT) -> None:
    before = snapshot(url)
    home = tmp_path / "home-b"
    try:
        join_machine(JoinOptions(token=token, machine_id=machine_id, pool="tank",
                                 endpoint=endpoint, home=home))
    finally:
        assert snapshot(url) == before
        assert not (home / "machine.json").exists()


def new_token(url: str, operator: Ed25519PrivateKey, ttl_s: float = 600) -> str:
    with open_control_plane(url) as cp:
        return invite(cp, operator, url, ttl_s)


def test_a_token_names_the_cluster_its_control_plane_and_peers(
        control_url: str, operator: Ed25519PrivateKey) -> None:
    token = parse(new_token(control_url, operator)).token
    assert token.cluster == "test" and token.control == control_url
    assert [p.id for p in token.peers] == ["machine-a"]
    assert token.expires > time.time() + 500


def test_an_invite_needs_a_trusted_operator_key(control_url: str) -> None:
    with open_control_plane(control_url) as cp, pytest.raises(MembershipError,
                                                                match="not trusted"):
        invite(cp, Ed25519PrivateKey.generate(), control_url, 600)


def test_expired_token(tmp_path: Path, control_url: str, operator: Ed25519PrivateKey) -> None:
    token = new_token(control_url, operator, ttl_s=1)
    time.sleep(1.5)
    with pytest.raises(ExpiredToken, match="expired"):
        attempt(tmp_path, control_url, token)


def test_token_signed_by_another_key(tmp_path: Path, control_url: str,
                                     operator: Ed25519PrivateKey) -> None:
    claims = parse(new_token(control_url, operator)).token
    intruder = Ed25519PrivateKey.generate()
    forged = issue(claims.model_copy(update={"trust": (public_key_text(intruder.public_key()),)}),
                   intruder)
    with pytest.raises(ForgedToken, match="not signed by an operator"):
        attempt(tmp_path, control_url, forged)


def test_malformed_token(tmp_path: Path, control_url: str) -> None:
    with pytest.raises(MalformedToken):
        attempt(tmp_path, control_url, "ployz-join-1.not-base64!.x")


def test_used_token(tmp_path: Path, control_url: str, operator: Ed25519PrivateKey) -> None:
    token = new_token(control_url, operator)
    with open_control_plane(control_url) as cp:
        cp.consume_invite(parse(token).token.invite, "machine-z")
    with pytest.raises(InviteUsed, match="was used by machine 'machine-z'"):
        attempt(tmp_path, control_url, token)


def test_duplicate_machine_id(tmp_path: Path, control_url: str,
                              operator: Ed25519PrivateKey) -> None:
    with pytest.raises(MembershipError, match="'machine-a' is already a member"):
        attempt(tmp_path, control_url, new_token(control_url, operator), "machine-a")


def test_endpoint_that_is_not_an_address_of_this_machine(
        tmp_path: Path, control_url: str, operator: Ed25519PrivateKey) -> None:
    with pytest.raises(MembershipError, match="not an address of this machine"):
        attempt(tmp_path, control_url, new_token(control_url, operator),
                endpoint="192.0.2.7:51820")


def test_control_plane_that_does_not_answer(tmp_path: Path, control_url: str,
                                            operator: Ed25519PrivateKey) -> None:
    claims = parse(new_token(control_url, operator)).token
    token = issue(claims.model_copy(update={"control": "nats://127.0.0.1:1?timeout=1"}),
                  operator)
    with pytest.raises(MembershipError, match=r"nats://127\.0\.0\.1:1\?timeout=1 does not answer"):
        attempt(tmp_path, control_url, token)


def test_a_join_that_fails_after_the_invite_gives_it_back(
        control_url: str, operator: Ed25519PrivateKey, machine_a_key: str,
        tmp_path: Path) -> None:
    """A new machine that holds machine-a's WireGuard key: the addition is refused after the
    invite was spent, and the invite is usable again."""
    token = new_token(control_url, operator)
    home = tmp_path / "home-b"
    home.mkdir()
    (home / "wireguard.key").write_text(machine_a_key + "\n")
    with pytest.raises(DuplicateWireGuardKey):
        join_machine(JoinOptions(token=token, machine_id="machine-b", pool="tank",
                                 endpoint=LOCAL_ENDPOINT, home=home))
    with open_control_plane(control_url) as cp:
        assert cp.get_invite(parse(token).token.invite).used_by is None
        assert [m.id for m in cp.list_machines()] == ["machine-a"]
