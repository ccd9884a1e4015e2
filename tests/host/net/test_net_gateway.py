"""The gateway: Debian's HAProxy on the configuration ployz writes, its map kept through the
runtime API, asked by a real HTTP client. Requests reach the service the Host names, whatever
its case or port; a host no service claims gets the gateway's 404; a map change takes effect
at once, and a restarted HAProxy loads the map the agent wrote."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ployz.net.gateway import Gateway, GatewayError, config_text

pytestmark = pytest.mark.host

BIND = "127.0.0.1"


def free_port(host: str) -> int:
    with socket.create_server((host, 0)) as probe:
        return int(probe.getsockname()[1])


class _Named(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = self.server.name.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def backend(host: str, name: str) -> Iterator[int]:
    """An HTTP server on ``host`` answering its ``name``; yields its port."""
    server = http.server.ThreadingHTTPServer((host, 0), _Named)
    server.name = name  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def haproxy(tmp_path: Path, port: int) -> Iterator[Gateway]:
    gateway = Gateway(tmp_path / "runtime.sock", tmp_path / "hosts.map")
    if not gateway.hosts_map.exists():
        gateway.hosts_map.write_text("")
    config = tmp_path / "haproxy.cfg"
    config.write_text(config_text(BIND, gateway.socket_path, gateway.hosts_map, port))
    binary = shutil.which("haproxy", path="/usr/sbin:/usr/bin")
    assert binary, "haproxy is not installed: run `make setup`"
    process = subprocess.Popen([binary, "-W", "-db", "-f", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:  # until its runtime API answers (a stopped one leaves its socket file)
            try:
                gateway.entries()
                break
            except GatewayError:
                assert process.poll() is None and time.monotonic() < deadline, (
                    "haproxy did not start")
                time.sleep(0.05)
        yield gateway
    finally:
        process.terminate()
        process.wait(10)


def get(port: int, host: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection(BIND, port, timeout=5)
    try:
        connection.request("GET", "/", headers={"Host": host})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_requests_follow_the_host_and_the_map_changes_at_once(tmp_path: Path):
    port = free_port(BIND)
    with backend("127.0.0.2", "one") as one, backend("127.0.0.3", "two") as two, \
            haproxy(tmp_path, port) as gateway:
        changes = gateway.apply({"one.example": f"127.0.0.2:{one}",
                                 "two.example": f"127.0.0.3:{two}"})
        assert changes.set == ("one.example", "two.example")
        assert get(port, "one.example") == (200, "one")
        assert get(port, f"TWO.Example:{port}") == (200, "two")
        status, body = get(port, "three.example")
        assert status == 404 and "no service answers to host three.example" in body
        assert not gateway.apply({"one.example": f"127.0.0.2:{one}",
                                  "two.example": f"127.0.0.3:{two}"})
        changes = gateway.apply({"one.example": f"127.0.0.3:{two}"})
        assert (changes.set, changes.removed) == (("one.example",), ("two.example",))
        assert get(port, "one.example") == (200, "two")
        assert get(port, "two.example")[0] == 404
        assert gateway.hosts_map.read_text() == f"one.example 127.0.0.3:{two}\n"


def test_a_restarted_gateway_loads_the_map_the_agent_wrote(tmp_path: Path):
    port = free_port(BIND)
    with backend("127.0.0.2", "one") as one:
        with haproxy(tmp_path, port) as gateway:
            gateway.apply({"one.example": f"127.0.0.2:{one}"})
        with haproxy(tmp_path, port) as gateway:
            assert gateway.entries() == {"one.example": f"127.0.0.2:{one}"}
            assert get(port, "one.example") == (200, "one")


def test_a_gateway_that_is_not_running_is_a_typed_error(tmp_path: Path):
    gateway = Gateway(tmp_path / "runtime.sock", tmp_path / "hosts.map")
    with pytest.raises(GatewayError) as failed:
        gateway.apply({"one.example": "10.212.0.5:80"})
    assert "is HAProxy (ployz-gateway) running?" in str(failed.value)


def test_a_gateway_that_drops_the_connection_is_a_gateway_error(tmp_path: Path) -> None:
    """An HAProxy starting or stopping accepts on its socket and drops what it accepted: that
    is the gateway not answering (the agent retries it), not an unexpected crash."""
    path = tmp_path / "runtime.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(os.fspath(path))
    server.listen()

    def drop() -> None:
        conn, _ = server.accept()
        time.sleep(0.2)  # the command arrives unread: closing now resets the connection
        conn.close()

    thread = threading.Thread(target=drop, daemon=True)
    thread.start()
    try:
        with pytest.raises(GatewayError, match="dropped `show map"):
            Gateway(path, tmp_path / "hosts.map").entries()
    finally:
        thread.join(5)
        server.close()
