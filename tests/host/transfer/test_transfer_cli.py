"""The ``ployzctl transfer`` contract, checked from outside: real processes, real sockets."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tests.host.transfer.transfer_cli import Receive, ployzctl
from tests.host.transfer.transfer_data import same_bytes


def start_receive(logs: Path, *args: object) -> tuple[Receive, str]:
    process = Receive(["transfer", "receive", "--listen", "127.0.0.1:0", *map(str, args)],
                      logs)
    return process, process.address


def test_keygen_writes_pkcs8_and_spki_pem(tmp_path: Path) -> None:
    done = ployzctl("transfer", "keygen", tmp_path / "keys", "--json")
    paths = json.loads(done.stdout)
    private_pem = Path(paths["private_key"]).read_bytes()
    public_pem = Path(paths["public_key"]).read_bytes()
    assert private_pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----")  # SubjectPublicKeyInfo
    private = serialization.load_pem_private_key(private_pem, password=None)
    public = serialization.load_pem_public_key(public_pem)
    assert isinstance(private, Ed25519PrivateKey) and isinstance(public, Ed25519PublicKey)
    assert private.public_key() == public
    assert Path(paths["private_key"]).stat().st_mode & 0o077 == 0
    again = ployzctl("transfer", "keygen", tmp_path / "keys", check=False)
    assert again.returncode != 0 and "already exists" in again.stderr


def test_send_and_receive_print_json_summaries(tmp_path: Path, data_file) -> None:
    paths = json.loads(ployzctl("transfer", "keygen", tmp_path / "keys", "--json").stdout)
    src, dst = data_file("mixed", 3_000_000), tmp_path / "out.bin"
    receiver, address = start_receive(tmp_path / "receive", "--file", dst, "--trust",
                                      paths["public_key"], "--json")
    sent = ployzctl("transfer", "send", "--file", src, "--to", address, "--key",
                    paths["private_key"], "--codec", "zstd", "--bwlimit", "500M", "--json")
    assert receiver.wait(60) == 0, receiver.stderr
    out = receiver.stdout
    assert same_bytes(src, dst)
    sender_summary = json.loads(sent.stdout)
    receiver_summary = json.loads(out)
    for summary in (sender_summary, receiver_summary):
        assert summary["bytes"] == 3_000_000
        assert summary["codec"] == "zstd"
        assert summary["resumes"] == 0
        assert 0 < summary["wire_bytes"] < 3_000_000
        assert summary["seconds"] >= 0
        assert summary["committed"]["path"] == str(dst)
    assert sender_summary["committed"] == receiver_summary["committed"]
    assert sent.stdout.count("\n") == 1


def test_untrusted_key_fails_the_send_and_the_receiver_keeps_waiting(tmp_path: Path,
                                                                       data_file) -> None:
    ours = json.loads(ployzctl("transfer", "keygen", tmp_path / "ours", "--json").stdout)
    theirs = json.loads(ployzctl("transfer", "keygen", tmp_path / "theirs", "--json").stdout)
    src, dst = data_file("text", 100_000), tmp_path / "out.bin"
    receiver, address = start_receive(tmp_path / "receive", "--file", dst, "--trust",
                                      ours["public_key"])
    try:
        refused = ployzctl("transfer", "send", "--file", src, "--to", address, "--key",
                           theirs["private_key"], check=False)
        assert refused.returncode == 1
        assert "ticket" in refused.stderr and refused.stdout == ""
        assert receiver.poll() is None
        ployzctl("transfer", "send", "--file", src, "--to", address, "--key",
                 ours["private_key"], "--codec", "none")
        assert receiver.wait(60) == 0
        assert same_bytes(src, dst)
    finally:
        receiver.kill()


def test_bad_arguments_exit_2(tmp_path: Path, data_file) -> None:
    keys = json.loads(ployzctl("transfer", "keygen", tmp_path / "keys", "--json").stdout)
    src = data_file("text", 10)
    for args in (["--to", "nohost", "--key", keys["private_key"]],
                 ["--to", "127.0.0.1:1", "--key", keys["private_key"], "--bwlimit", "fast"],
                 ["--to", "127.0.0.1:1", "--key", tmp_path / "missing.key"]):
        done = ployzctl("transfer", "send", "--file", src, *args, check=False)
        assert done.returncode == 2, (args, done.stderr)


def test_unreachable_receiver_fails_after_the_configured_retries(tmp_path: Path,
                                                                 data_file) -> None:
    keys = json.loads(ployzctl("transfer", "keygen", tmp_path / "keys", "--json").stdout)
    done = ployzctl("transfer", "send", "--file", data_file("text", 10), "--to", "127.0.0.1:1",
                    "--key", keys["private_key"], "--retries", "3", "--backoff", "0.01",
                    check=False)
    assert done.returncode == 1
    assert "after 3 attempts" in done.stderr
