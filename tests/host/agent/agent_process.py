"""A real agent process (``python -m ployz.agent.daemon``) on loopback, and ways to talk to it."""

from __future__ import annotations

import json
import select
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.agent.auth import sign_request, signing_payload
from ployz.agent.client import AgentClient
from ployz.agent.protocol import encode_frame, recv_frame
from ployz.transfer.addresses import parse_address
from ployz.transfer.keys import public_key_text

MACHINE_ID = "machine-a"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


@dataclass
class AgentProcess:
    """One agent process; ``restart`` starts a new one on the same state directory."""

    state_dir: Path
    trusted: Ed25519PrivateKey
    extra_args: list[str]
    process: subprocess.Popen[str] | None = None
    address: str = ""
    _clients: list[AgentClient] = field(default_factory=list)
    machine_id: str = MACHINE_ID

    def start(self, listen: str = "127.0.0.1:0") -> None:
        command = [
            sys.executable, "-m", "ployz.agent.daemon",
            "--machine-id", self.machine_id,
            "--listen", listen,
            "--trust", public_key_text(self.trusted.public_key()),
            "--state-dir", str(self.state_dir),
            *self.extra_args,
        ]
        with (self.state_dir.parent / "agent.log").open("a") as log:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log, text=True
            )
        assert self.process.stdout is not None
        if not _readable_within(self.process.stdout, START_TIMEOUT_S):
            self.kill()
            raise RuntimeError("agent did not report listening in time; see agent.log")
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"agent exited with {self.process.wait()}; see agent.log")
        event = json.loads(line)
        assert event["event"] == "listening" and event["machine_id"] == self.machine_id
        self.address = event["address"]

    def client(self, key: Ed25519PrivateKey | None = None, **options: Any) -> AgentClient:
        client = AgentClient(self.address, key or self.trusted, **options)
        self._clients.append(client)
        return client

    def stop(self) -> int:
        """SIGTERM, as a service manager would; returns the exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=STOP_TIMEOUT_S)

    def kill(self) -> None:
        """SIGKILL: the agent gets no chance to tidy up."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def restart(self) -> None:
        """Stops the agent and starts it again on the same address and state directory."""
        self.stop()
        self.start(self.address)

    def close(self) -> None:
        for client in self._clients:
            client.close()
        if self.process is not None and self.process.poll() is None:
            self.kill()


def _readable_within(stream: Any, timeout_s: float) -> bool:
    readable, _, _ = select.select([stream], [], [], timeout_s)
    return bool(readable)


class RawConnection:
    """Sends envelopes exactly as given, to test what the agent refuses."""

    def __init__(self, address: str) -> None:
        self._sock = socket.create_connection(parse_address(address), timeout=10)

    def send(self, envelope: dict[str, Any]) -> dict[str, Any]:
        return self.send_bytes(encode_frame(envelope))

    def send_bytes(self, data: bytes) -> dict[str, Any]:
        self._sock.sendall(data)
        return recv_frame(self._sock)

    def close(self) -> None:
        self._sock.close()


def error_code(response: dict[str, Any]) -> str:
    assert response["ok"] is False, response
    return response["error"]["code"]


def signed(key, method="agent.health", params=None, audience=MACHINE_ID, **changes) -> dict:
    """A validly signed envelope; ``changes`` are applied before signing."""
    envelope = sign_request(key, audience, method, params or {})
    envelope.update(changes)
    envelope["sig"] = key.sign(signing_payload(envelope)).hex()
    return {"id": 7, **envelope}
