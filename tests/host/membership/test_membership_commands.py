"""``ployzctl machine invite``, ``join`` and ``rm`` as subprocesses against a real SQLite control
plane: the token printed, the refusals' messages and exit statuses, and nothing written by a
refusal. (``init`` and a successful ``join`` bring up kernel WireGuard: the VM's e2e suite.)"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.control import PutService, Service, open_control_plane
from ployz.deploy.membership.tokens import parse
from ployz.net.keys import generate_private_key, public_key_of
from ployz.transfer.keys import public_key_text

pytestmark = pytest.mark.host


@pytest.fixture
def cluster(tmp_path: Path) -> dict[str, str]:
    """A cluster of machine-a (active, running shop/db) and machine-b (draining), and the
    environment of its operator."""
    operator = Ed25519PrivateKey.generate()
    key = tmp_path / "operator.key"
    key.write_bytes(operator.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    url = f"sqlite:///{tmp_path / 'control.db'}"
    with open_control_plane(url) as cp:
        cp.create_cluster("test", (public_key_text(operator.public_key()),))
        for machine_id in ("machine-a", "machine-b"):
            cp.add_machine(machine_id, public_key_of(generate_private_key()),
                           f"10.0.0.{len(machine_id)}:51820")
        cp.set_lifecycle("machine-b", "draining")
        lease = cp.acquire("deploy/shop", "test", 60)
        cp.commit("shop", lease.token, [PutService(service=Service(
            namespace="shop", name="db", image="busybox", machine="machine-a"))])
        cp.release("deploy/shop", lease.token)
    return {"PLOYZ_CONTROL": url, "PLOYZ_KEY": str(key), "PLOYZ_HOME": str(tmp_path / "home")}


def ployzctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ployzctl", *args], capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, **env}, check=False)


def documents(env: dict[str, str]) -> list[tuple[object, ...]]:
    with sqlite3.connect(env["PLOYZ_CONTROL"].removeprefix("sqlite:///")) as db:
        return db.execute("SELECT * FROM documents ORDER BY kind, key").fetchall()


def test_invite_prints_a_token_for_this_cluster(cluster: dict[str, str]) -> None:
    done = ployzctl(cluster, "machine", "invite", "--ttl", "10m", "--json")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    token = parse(printed["token"]).token
    assert token.cluster == "test" and printed["expires_in"] == 600
    assert {p.id for p in token.peers} == {"machine-a", "machine-b"}


def test_invite_with_a_bad_ttl_is_refused(cluster: dict[str, str]) -> None:
    before = documents(cluster)
    done = ployzctl(cluster, "machine", "invite", "--ttl", "soon")
    assert done.returncode == 2 and "--ttl" in done.stderr and "15m" in done.stderr
    assert documents(cluster) == before


def test_join_with_a_malformed_token_is_refused(cluster: dict[str, str], tmp_path: Path) -> None:
    before = documents(cluster)
    done = ployzctl(cluster, "machine", "join", "ployz-join-1.garbage", "--id", "machine-c",
                    "--pool", "tank", "--endpoint", "127.0.0.1")
    assert done.returncode == 2 and "join token" in done.stderr, done.stderr
    assert documents(cluster) == before
    assert not (tmp_path / "home").exists()


def test_rm_names_what_blocks_it(cluster: dict[str, str]) -> None:
    before = documents(cluster)
    done = ployzctl(cluster, "machine", "rm", "machine-a")
    assert done.returncode == 1
    assert "service shop/db" in done.stderr and "drain it first" in done.stderr
    assert documents(cluster) == before


def test_rm_of_a_drained_empty_machine(cluster: dict[str, str]) -> None:
    done = ployzctl(cluster, "machine", "rm", "machine-b", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["removed"]["id"] == "machine-b"
    listed = json.loads(ployzctl(cluster, "machine", "ls", "--json").stdout)
    assert [m["id"] for m in listed] == ["machine-a"]
    assert listed[0]["endpoint"] == "10.0.0.9:51820"


def test_rm_force_lists_what_was_left(cluster: dict[str, str]) -> None:
    done = ployzctl(cluster, "machine", "rm", "machine-a", "--force")
    assert done.returncode == 0, done.stderr
    assert "shop/db" in done.stdout


def test_rm_of_an_unknown_machine(cluster: dict[str, str]) -> None:
    done = ployzctl(cluster, "machine", "rm", "machine-z")
    assert done.returncode == 1 and "unknown machine 'machine-z'" in done.stderr
