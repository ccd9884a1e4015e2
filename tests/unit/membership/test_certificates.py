"""The cluster's server CA and the certificates it issues: each names its server's address,
serves both ends of a route, and verifies against the CA and nothing else."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from ployz.deploy.membership.certificates import (
    TlsFiles,
    authority_of,
    ensure_server,
    issue_server,
    new_authority,
)
from ployz.deploy.membership.errors import MembershipError


def test_a_server_certificate_names_its_address_and_is_signed_by_the_ca() -> None:
    authority = new_authority("shop")
    cert_pem, _ = issue_server(authority, "machine-b", "192.0.2.2")
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.0.2.2")]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    cert.verify_directly_issued_by(authority.cert)
    with pytest.raises(ValueError):
        cert.verify_directly_issued_by(new_authority("other").cert)
    named, _ = issue_server(authority, "machine-c", "c.example")
    assert x509.load_pem_x509_certificate(named).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == ["c.example"]


def test_the_ca_key_must_belong_to_the_ca_the_url_names() -> None:
    authority = new_authority("shop")
    assert authority_of(authority.cert_der, authority.key_pem.decode()).cert_der == (
        authority.cert_der)
    with pytest.raises(MembershipError, match="does not belong to the CA the control URL"):
        authority_of(authority.cert_der, new_authority("other").key_pem.decode())


def test_a_machines_certificate_is_issued_once_and_kept_private(tmp_path: Path) -> None:
    files = TlsFiles(tmp_path / "tls")
    authority = new_authority("shop")
    ensure_server(files, authority, "machine-a", "192.0.2.1")
    first = files.server_cert.read_bytes()
    ensure_server(files, authority, "machine-a", "192.0.2.1")
    assert files.server_cert.read_bytes() == first
    assert files.server_key.stat().st_mode & 0o777 == 0o600
    assert files.ca_cert.read_bytes() == authority.cert_pem
