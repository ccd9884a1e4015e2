"""``ployzctl agent keygen`` and ``ployzctl agent call`` against a real agent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from ployz.transfer.keys import load_private_key, public_key_text
from tests.host.agent.agent_process import MACHINE_ID

pytestmark = pytest.mark.host


def ployzctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ployzctl", *args], capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.fixture
def key_file(operator_key, tmp_path: Path) -> Path:
    path = tmp_path / "operator.pem"
    path.write_bytes(operator_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return path


def test_keygen_prints_the_public_key_of_the_new_file(tmp_path: Path):
    path = tmp_path / "new.pem"
    result = ployzctl("agent", "keygen", "--out", str(path), "--json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["public_key"] == public_key_text(load_private_key(path).public_key())
    again = ployzctl("agent", "keygen", "--out", str(path))
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr


def test_call_prints_the_result_as_json(agent, key_file: Path):
    result = ployzctl("agent", "call", "--address", agent.address, "--key", str(key_file),
                      "agent.operations", '{"limit": 5}')
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    health = ployzctl("agent", "call", "--address", agent.address, "--key", str(key_file),
                      "agent.health")
    assert json.loads(health.stdout)["machine_id"] == MACHINE_ID


def test_call_reports_remote_errors_with_their_code(agent, key_file: Path):
    result = ployzctl("agent", "call", "--address", agent.address, "--key", str(key_file),
                      "zfs.exists", '{"name": "elsewhere/vol"}')
    assert result.returncode == 1
    assert "[agent.outside-pool]" in result.stderr


@pytest.mark.parametrize(
    ("params", "message"),
    [("[1]", "must be a JSON object"), ("{oops", "not valid JSON")],
)
def test_call_refuses_bad_params_locally(agent, key_file: Path, params, message):
    result = ployzctl("agent", "call", "--address", agent.address, "--key", str(key_file),
                      "agent.health", params)
    assert result.returncode == 2 and message in result.stderr


def test_run_refuses_a_bad_trusted_key(tmp_path: Path):
    result = ployzctl("agent", "run", "--machine-id", "m", "--listen", "127.0.0.1:0",
                      "--trust", "ed25519:nope", "--state-dir", str(tmp_path / "s"))
    assert result.returncode == 2 and "--trust" in result.stderr
