"""The JetStream server's configuration as the product renders it, the client URL it gives, and
the fields it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from ployz.control.nats_server import NatsServerConfig, ServerTls, new_credentials


def _config(**changes: object) -> NatsServerConfig:
    fields: dict[str, object] = {
        "server_name": "machine-a", "host": "192.0.2.10", "store_dir": Path("/var/lib/ployz/js"),
        "user": "ployz-1a2b", "password": "pass_word-1.~",
    }
    return NatsServerConfig(**(fields | changes))  # type: ignore[arg-type]


def test_a_standalone_server_requires_credentials_and_keeps_monitoring_local() -> None:
    assert _config(monitor_port=8222).render() == """\
# Written by ployz (`ployzctl machine init --control nats`); holds the cluster's
# credentials: keep it readable by root only.
server_name: "machine-a"
host: "192.0.2.10"
port: 4222
jetstream {
    store_dir: "/var/lib/ployz/js"
}
authorization {
    user: "ployz-1a2b"
    password: "pass_word-1.~"
}
http: "127.0.0.1:8222"
"""


def test_without_a_cluster_port_nothing_of_a_cluster_is_rendered() -> None:
    text = _config().render()
    assert "cluster" not in text.replace("the cluster's", "")
    assert "http" not in text


def test_a_clustered_server_listens_for_routes_that_authenticate() -> None:
    routes = ("nats://ployz-1a2b:pass_word-1.~@192.0.2.11:6222",
              "nats://ployz-1a2b:pass_word-1.~@192.0.2.12:6222")
    text = _config(cluster_port=6222, routes=routes).render()
    assert text.endswith("""\
cluster {
    name: "ployz"
    host: "192.0.2.10"
    port: 6222
    authorization {
        user: "ployz-1a2b"
        password: "pass_word-1.~"
    }
    routes: [
        "nats://ployz-1a2b:pass_word-1.~@192.0.2.11:6222"
        "nats://ployz-1a2b:pass_word-1.~@192.0.2.12:6222"
    ]
}
""")


def test_strings_are_quoted_and_escaped() -> None:
    text = _config(store_dir=Path('/srv/my "js"\\store $x #y\n')).render()
    assert '    store_dir: "/srv/my \\"js\\"\\\\store $x #y\\n"\n' in text


@pytest.mark.parametrize(("host", "url"), [
    (None, "nats://ployz-1a2b:pass_word-1.~@192.0.2.10:4222"),
    ("10.210.0.2", "nats://ployz-1a2b:pass_word-1.~@10.210.0.2:4222"),
    ("2001:db8::1", "nats://ployz-1a2b:pass_word-1.~@[2001:db8::1]:4222"),
    ("nats.example.org", "nats://ployz-1a2b:pass_word-1.~@nats.example.org:4222"),
])
def test_the_client_url_carries_the_credentials(host: str | None, url: str) -> None:
    assert _config().client_url(host) == url


def test_a_server_listening_everywhere_needs_the_clients_host() -> None:
    config = _config(host="0.0.0.0", port=4333)
    with pytest.raises(ValueError, match=r"listens on every address \(0\.0\.0\.0\)"):
        config.client_url()
    assert config.client_url("192.0.2.10") == "nats://ployz-1a2b:pass_word-1.~@192.0.2.10:4333"


@pytest.mark.parametrize(("changes", "message"), [
    ({"server_name": "machine a"}, "NATS server name 'machine a'"),
    ({"cluster_name": ""}, "NATS cluster name ''"),
    ({"host": "not a host"}, "NATS host 'not a host'"),
    ({"port": 0}, "NATS port 0"),
    ({"monitor_port": 65536}, "NATS monitor port 65536"),
    ({"store_dir": Path("relative/js")}, "must be absolute"),
    ({"user": ""}, "NATS user"),
    ({"password": "p@ss"}, "NATS password: letters, digits"),
    ({"password": "a b"}, "NATS password"),
    ({"routes": ("nats://192.0.2.11:6222",)}, "routes need a cluster port"),
])
def test_malformed_fields_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _config(**changes)


def test_new_credentials_are_fresh_and_usable_in_a_url() -> None:
    first, second = new_credentials(), new_credentials()
    assert first != second
    user, password = first
    assert user.startswith("ployz-")
    assert len(password) >= 43  # 32 random bytes
    _config(user=user, password=password)  # accepted as they are


def test_the_file_is_written_whole_and_private(tmp_path: Path) -> None:
    path = tmp_path / "nats" / "server.conf"
    config = _config()
    config.write(path)
    assert path.read_text() == config.render()
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["server.conf"]


def test_with_tls_clients_need_tls_and_routes_mutual_tls() -> None:
    tls = ServerTls(cert_file=Path("/h/tls/server.crt"), key_file=Path("/h/tls/server.key"),
                    ca_file=Path("/h/tls/ca.crt"))
    text = _config(tls=tls, cluster_port=6222, routes=("nats://u:p@192.0.2.11:6222",)).render()
    client, cluster = text.split("cluster {")
    assert 'cert_file: "/h/tls/server.crt"' in client and "verify: false" in client
    assert 'ca_file: "/h/tls/ca.crt"' in cluster and "verify: true" in cluster
    assert _config(tls=tls).client_url(ca="Q0E") == (
        "nats://ployz-1a2b:pass_word-1.~@192.0.2.10:4222?ca=Q0E")
