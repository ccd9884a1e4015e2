"""The control URLs of the replicated JetStream servers, made from the single server's."""

from __future__ import annotations

import pytest

from ployz.control.url import ca_of, ca_parameter, nats_servers
from ployz.deploy.membership.certificates import new_authority
from ployz.deploy.membership.errors import MembershipError
from ployz.deploy.membership.replication import (
    credentials_of,
    is_single_server,
    replicated_url,
)

SINGLE = "nats://ployz-1a2b:pass_word-1.~@192.0.2.1:4222"


def test_the_replicated_url_names_each_server_with_the_clusters_credentials() -> None:
    url = replicated_url(SINGLE, ["192.0.2.1", "192.0.2.2", "2001:db8::3"])
    assert url == ("nats://ployz-1a2b:pass_word-1.~@192.0.2.1:4223,"
                   "ployz-1a2b:pass_word-1.~@192.0.2.2:4223,"
                   "ployz-1a2b:pass_word-1.~@[2001:db8::3]:4223?replicas=3")
    assert nats_servers(url)[2] == "nats://ployz-1a2b:pass_word-1.~@[2001:db8::3]:4223"
    assert credentials_of(url) == ("ployz-1a2b", "pass_word-1.~")


def test_only_a_nats_url_of_one_server_is_a_single_server() -> None:
    assert is_single_server(SINGLE)
    assert not is_single_server(replicated_url(SINGLE, ["192.0.2.1", "192.0.2.2", "192.0.2.3"]))
    assert not is_single_server("sqlite:///var/lib/ployz/control.db")


def test_a_url_without_credentials_is_refused_without_showing_it() -> None:
    with pytest.raises(MembershipError, match=r"nats://192\.0\.2\.1:4222 carries no NATS"):
        credentials_of("nats://192.0.2.1:4222")


def test_the_replicated_url_keeps_the_clusters_ca() -> None:
    ca = new_authority("ployz").cert_der
    url = replicated_url(f"{SINGLE}?ca={ca_parameter(ca)}", ["192.0.2.1", "192.0.2.2",
                                                             "192.0.2.3"])
    assert url.endswith(f"?replicas=3&ca={ca_parameter(ca)}")
    assert ca_of(url) == ca
