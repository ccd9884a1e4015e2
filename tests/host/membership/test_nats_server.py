"""A real nats-server on the configuration the product writes, run as the machine's daemon runs
it (a detached process): it serves the control plane to a client with the credentials, refuses
one without (:class:`ControlPlaneRefused` at once, not a timeout after the retries, and without
the credentials in the message), and three servers on rendered cluster configurations form a
JetStream cluster. With TLS: a client verifies the server against the cluster's CA and the
address it dialled and refuses any other server at once; routes are mutual TLS."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ployz.control import ControlPlaneRefused, Machine, open_control_plane
from ployz.control.nats_server import NatsServerConfig, ServerTls, new_credentials
from ployz.control.url import ca_parameter
from ployz.deploy.membership import daemons
from ployz.deploy.membership.certificates import (
    CertificateAuthority,
    TlsFiles,
    issue_server,
    new_authority,
    server_tls,
    write_server,
)
from ployz.deploy.membership.daemons import Daemon

pytestmark = pytest.mark.host

START_TIMEOUT_S = 15.0


@pytest.fixture(autouse=True)
def without_systemd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Process mode even on a host that systemd runs: a test never installs a unit."""
    monkeypatch.setattr(daemons, "SYSTEMD_RUN_DIR", tmp_path / "no-systemd")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _daemon(config: NatsServerConfig, home: Path) -> Daemon:
    """As the machine's home declares it: the bare command, found where systemd finds it."""
    path = home / f"{config.server_name}.conf"
    config.write(path)
    return Daemon(name=f"nats-{config.server_name}", argv=("nats-server", "-c", str(path)),
                  home=home, description="ployz control plane (NATS JetStream)")


def _start(daemon: Daemon, port: int) -> None:
    assert daemons.start(daemon) == "process"
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _listens(port):
        if not daemons.running(daemon) or time.monotonic() > deadline:
            pytest.fail(f"nats-server did not listen on {port}:\n{daemons.log_tail(daemon)}")
        time.sleep(0.05)


Servers = Callable[..., NatsServerConfig]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Servers]:
    """Starts a server on a configuration with the given fields changed; stops them all."""
    started: list[Daemon] = []
    user, password = new_credentials()

    def start(**changes: object) -> NatsServerConfig:
        fields: dict[str, object] = {
            "server_name": f"m{len(started)}", "host": "127.0.0.1", "port": _free_port(),
            "store_dir": tmp_path / f"store-{len(started)}", "user": user, "password": password,
        }
        config = NatsServerConfig(**(fields | changes))  # type: ignore[arg-type]
        daemon = _daemon(config, tmp_path)
        started.append(daemon)
        _start(daemon, config.port)
        return config

    yield start
    for daemon in started:
        daemons.stop(daemon)


def test_nats_server_accepts_the_rendered_configurations(tmp_path: Path) -> None:
    binary = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin")
    if binary is None:
        pytest.fail("nats-server not found: run `make setup`", pytrace=False)
    user, password = new_credentials()
    standalone = NatsServerConfig(server_name="m0", host="127.0.0.1", store_dir=tmp_path / "js",
                                  user=user, password=password, monitor_port=8222)
    clustered = NatsServerConfig(
        server_name="m1", host="127.0.0.1", store_dir=tmp_path / "js", user=user,
        password=password, cluster_port=6222,
        routes=(f"nats://{user}:{password}@127.0.0.2:6222",))
    for config in (standalone, clustered):
        path = tmp_path / "server.conf"
        config.write(path)
        result = subprocess.run([binary, "-t", "-c", str(path)], capture_output=True, text=True,
                                check=False)
        assert result.returncode == 0, result.stderr


def test_the_server_serves_the_control_plane_with_its_credentials(server: Servers) -> None:
    monitor = _free_port()
    config = server(monitor_port=monitor)
    with open_control_plane(config.client_url()) as cp:
        cp.register_machine(Machine(id="machine-a", overlay_ip="10.210.1.1",
                                    subnet="10.210.1.0/24"))
    with open_control_plane(config.client_url()) as cp:
        assert cp.get_machine("machine-a").overlay_ip == "10.210.1.1"
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/jsz", timeout=5) as answer:
        assert json.load(answer)["config"]["store_dir"].startswith(str(config.store_dir))
    assert (config.store_dir / "jetstream").is_dir()


@pytest.mark.parametrize("credentials", ["{user}:wrong@", "", "{user}@"])
def test_a_client_without_the_password_is_refused(
        server: Servers, credentials: str, tmp_path: Path) -> None:
    config = server()
    url = f"nats://{credentials.format(user=config.user)}127.0.0.1:{config.port}?timeout=30"
    started = time.monotonic()
    with pytest.raises(ControlPlaneRefused, match="refused this machine's credentials") as error:
        open_control_plane(url)
    assert time.monotonic() - started < 10  # at once, not after the 30 s of retries
    assert config.password not in str(error.value)
    log = (tmp_path / f"nats-{config.server_name}.log").read_text()
    assert "authentication error" in log or "Authorization Violation" in log


def test_quoted_strings_reach_the_server_intact(server: Servers, tmp_path: Path) -> None:
    store = tmp_path / 'odd "store" $HOME #not-a-comment \\ dir'
    config = server(store_dir=store)
    with open_control_plane(config.client_url()) as cp:
        cp.register_machine(Machine(id="machine-b", overlay_ip="10.210.2.1",
                                    subnet="10.210.2.0/24"))
    assert (store / "jetstream").is_dir()


def test_three_rendered_cluster_configurations_form_a_jetstream_cluster(server: Servers) -> None:
    """Each server configured clustered from its first start, routes carrying the credentials:
    what forming the cluster from ``machine join`` will rely on."""
    user, password = new_credentials()
    cluster_ports = [_free_port() for _ in range(3)]
    configs = [
        server(user=user, password=password, cluster_port=port, routes=tuple(
            f"nats://{user}:{password}@127.0.0.1:{other}" for other in cluster_ports
            if other != port))
        for port in cluster_ports
    ]
    seeds = ",".join(url.removeprefix("nats://") for url in (c.client_url() for c in configs))
    with open_control_plane(f"nats://{seeds}?replicas=3&timeout=30") as cp:
        cp.register_machine(Machine(id="machine-c", overlay_ip="10.210.3.1",
                                    subnet="10.210.3.0/24"))
    with open_control_plane(f"{configs[2].client_url()}?timeout=30") as cp:
        assert cp.get_machine("machine-c").overlay_ip == "10.210.3.1"


def test_a_stopped_server_no_longer_listens(tmp_path: Path) -> None:
    user, password = new_credentials()
    config = NatsServerConfig(server_name="m9", host="127.0.0.1", port=_free_port(),
                              store_dir=tmp_path / "js", user=user, password=password)
    daemon = _daemon(config, tmp_path)
    _start(daemon, config.port)
    daemons.stop(daemon)
    assert not daemons.running(daemon)
    assert not _listens(config.port)
    assert "Server Exiting" in daemons.log_tail(daemon)


@pytest.fixture
def authority() -> CertificateAuthority:
    return new_authority("test")


def tls_files(tmp_path: Path, authority: CertificateAuthority, name: str,
              host: str = "127.0.0.1") -> ServerTls:
    files = TlsFiles(tmp_path / f"tls-{name}")
    write_server(files, authority.cert_pem, issue_server(authority, name, host))
    return server_tls(files)


def test_with_tls_a_client_trusting_the_cluster_ca_is_served(
        server: Servers, authority: CertificateAuthority, tmp_path: Path) -> None:
    config = server(tls=tls_files(tmp_path, authority, "m0"))
    url = config.client_url(ca=ca_parameter(authority.cert_der))
    with open_control_plane(url) as cp:
        cp.register_machine(Machine(id="machine-a", overlay_ip="10.210.1.1",
                                    subnet="10.210.1.0/24"))
        assert cp.get_machine("machine-a").overlay_ip == "10.210.1.1"


@pytest.mark.parametrize("client", ["another CA", "no CA", "another address"])
def test_with_tls_a_server_the_client_cannot_verify_is_refused_at_once(
        server: Servers, authority: CertificateAuthority, tmp_path: Path, client: str) -> None:
    """A server of another cluster (or a man in the middle) is refused before the client sends
    its password; so is the cluster's own server reached at an address its certificate does
    not name."""
    host = "127.0.0.2" if client == "another address" else "127.0.0.1"
    config = server(tls=tls_files(tmp_path, authority, "m0", host))
    ca = {"another CA": ca_parameter(new_authority("other").cert_der), "no CA": None,
          "another address": ca_parameter(authority.cert_der)}[client]
    url = config.client_url(ca=ca).replace("?", "?timeout=30&") if ca else (
        config.client_url() + "?timeout=30")
    started = time.monotonic()
    with pytest.raises(ControlPlaneRefused, match="is not one of the cluster's") as error:
        open_control_plane(url)
    assert time.monotonic() - started < 10
    assert config.password not in str(error.value)


def test_with_tls_three_servers_form_a_cluster_over_mutual_tls_routes(
        server: Servers, authority: CertificateAuthority, tmp_path: Path) -> None:
    user, password = new_credentials()
    cluster_ports = [_free_port() for _ in range(3)]
    configs = [
        server(user=user, password=password, cluster_port=port,
               tls=tls_files(tmp_path, authority, f"m{i}"), routes=tuple(
                   f"nats://{user}:{password}@127.0.0.1:{other}" for other in cluster_ports
                   if other != port))
        for i, port in enumerate(cluster_ports)
    ]
    ca = ca_parameter(authority.cert_der)
    seeds = ",".join(c.client_url().removeprefix("nats://") for c in configs)
    with open_control_plane(f"nats://{seeds}?replicas=3&timeout=30&ca={ca}") as cp:
        cp.register_machine(Machine(id="machine-c", overlay_ip="10.210.3.1",
                                    subnet="10.210.3.0/24"))
    with open_control_plane(f"{configs[2].client_url(ca=ca)}&timeout=30") as cp:
        assert cp.get_machine("machine-c").overlay_ip == "10.210.3.1"
    log = (tmp_path / "nats-m0.log").read_text()
    assert "TLS route handshake error" not in log  # (the test's port probes are client errors)


def test_a_route_without_the_cluster_certificate_is_refused(
        server: Servers, authority: CertificateAuthority, tmp_path: Path) -> None:
    """A server holding the cluster's password but not a certificate of its CA cannot join the
    routes: the route's mutual TLS refuses it."""
    user, password = new_credentials()
    ports = [_free_port() for _ in range(2)]
    server(user=user, password=password, cluster_port=ports[0],
           tls=tls_files(tmp_path, authority, "m0"),
           routes=(f"nats://{user}:{password}@127.0.0.1:{ports[1]}",))
    server(user=user, password=password, cluster_port=ports[1],
           tls=tls_files(tmp_path, new_authority("intruder"), "m1"),
           routes=(f"nats://{user}:{password}@127.0.0.1:{ports[0]}",))
    deadline = time.monotonic() + 20
    log = tmp_path / "nats-m0.log"
    while "TLS route handshake error" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.2)
