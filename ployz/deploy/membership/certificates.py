"""TLS for the cluster's JetStream servers: a certificate authority of the cluster's own, and a
certificate for each machine that runs a server.

``machine init --control nats`` makes the CA (ECDSA P-256) and its machine's server certificate.
The CA certificate travels in the control URL (``?ca=``, see :mod:`ployz.control.url`), so every
client, agent and ``ployzctl`` verifies the servers against it, and each server's certificate
names the address clients and routes reach it at (an IP SAN). Servers also present their
certificate to each other on their routes and require the other's (mutual TLS on the cluster
port). The CA's key is kept on the first machine (``nats/tls/ca.key``, 0600) and, while the
cluster forms, in the control plane's cluster document: the second and third machines, which run
servers too, sign their own certificate with it at their join, and the move onto the three
servers removes it from there. Whoever could read it there holds the cluster's NATS password
already, with which they may read and write every fact.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ployz.control.nats_server import ServerTls
from ployz.deploy.membership.errors import MembershipError
from ployz.private_files import write_private

VALIDITY = datetime.timedelta(days=3650)
_BACKDATE = datetime.timedelta(hours=1)
"""Certificates are valid from an hour before they are made: machines' clocks differ."""


@dataclass(frozen=True)
class CertificateAuthority:
    cert_pem: bytes
    key_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    @property
    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class TlsFiles:
    """Where one machine keeps its TLS material (under its home's ``nats/tls``)."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    def authority(self) -> CertificateAuthority | None:
        """The CA with its key, if this machine holds it."""
        if not self.ca_key.exists():
            return None
        return CertificateAuthority(self.ca_cert.read_bytes(), self.ca_key.read_bytes())


def new_authority(cluster: str) -> CertificateAuthority:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ployz cluster {cluster} CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE).not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return CertificateAuthority(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def authority_of(cert_der: bytes, key_pem: str) -> CertificateAuthority:
    """The CA of the control URL's certificate and the control plane's key; MembershipError
    when they do not belong together."""
    try:
        cert = x509.load_der_x509_certificate(cert_der)
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except ValueError as exc:
        raise MembershipError(f"the cluster's server CA is unreadable: {exc}") from None
    if key.public_key() != cert.public_key():
        raise MembershipError("the server CA key the control plane holds does not belong to the "
                              "CA the control URL names")
    return CertificateAuthority(cert.public_bytes(serialization.Encoding.PEM), key_pem.encode())


def server_tls(files: TlsFiles) -> ServerTls:
    """The server configuration's view of a machine's files."""
    return ServerTls(cert_file=files.server_cert, key_file=files.server_key,
                     ca_file=files.ca_cert)


def ensure_server(files: TlsFiles, authority: CertificateAuthority, server: str,
                  host: str) -> None:
    """This machine's server certificate for ``host``, issued unless present (a re-run)."""
    if not files.server_cert.exists():
        write_server(files, authority.cert_pem, issue_server(authority, server, host))


def issue_server(authority: CertificateAuthority, server: str, host: str) -> tuple[bytes, bytes]:
    """A certificate and key for the JetStream server ``server`` reached at ``host`` (an IP
    address or a DNS name), usable by its clients and by its routes in both directions."""
    ca_key = serialization.load_pem_private_key(authority.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise MembershipError("the cluster CA's key is not an ECDSA key")
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        subject_alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        subject_alt = x509.DNSName(host)
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, server)]))
            .issuer_name(authority.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE).not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([subject_alt]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def write_server(files: TlsFiles, ca_cert_pem: bytes, server: tuple[bytes, bytes]) -> None:
    """The CA certificate and this machine's server certificate and key (0600)."""
    files.directory.mkdir(parents=True, exist_ok=True)
    write_private(files.ca_cert, ca_cert_pem.decode())
    write_private(files.server_cert, server[0].decode())
    write_private(files.server_key, server[1].decode())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
