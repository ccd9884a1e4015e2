"""Control-plane URLs printed without the credentials a NATS URL carries."""

from __future__ import annotations

from ployz.control.url import redact_url


def test_credentials_are_removed_from_every_server() -> None:
    url = "nats://ployz:s3cr-et@10.0.0.1:4222,ployz:s3cr-et@10.0.0.2:4222?replicas=3"
    assert redact_url(url) == "nats://10.0.0.1:4222,10.0.0.2:4222?replicas=3"


def test_urls_without_credentials_are_unchanged() -> None:
    for url in ("sqlite:///var/lib/ployz/control.db", "nats://10.0.0.1:4222"):
        assert redact_url(url) == url


def test_the_ca_certificate_is_shown_as_a_fingerprint():
    shown = redact_url("nats://u:p@10.0.0.1:4222?replicas=3&ca=TUlJQmZ6Q0NBU2Fn")
    assert shown.startswith("nats://10.0.0.1:4222?replicas=3&ca=sha256:")
    assert "TUlJQ" not in shown and len(shown) < 70
