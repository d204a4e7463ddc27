"""Certificates of the secured local profile: a private CA and one server certificate, made here.

The CA signs a certificate for ``127.0.0.1`` and ``localhost`` that both local servers present
(Kafka's SASL_SSL listener, Cassandra's client TLS). Clients trust ``ca.pem`` only, so a server
certificate from anywhere else fails verification. Everything is PEM: Kafka reads it with
``ssl.keystore.type=PEM``, Cassandra with ``PEMBasedSslContextFactory``, Python with ``ssl``.

Files (under one folder, private keys mode 0600)::

    ca.pem          the CA certificate (what clients trust)
    ca-key.pem      the CA key (kept to re-issue the server certificate)
    server.pem      the server's unencrypted PKCS#8 key, its certificate and the CA certificate
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

CA_DAYS = 3650
SERVER_DAYS = 365
RENEW_BEFORE = dt.timedelta(days=7)
HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class CertFiles:
    """Paths of the generated PEM files."""

    ca: Path
    ca_key: Path
    server: Path


def cert_files(directory: Path) -> CertFiles:
    """Where the PEM files of ``directory`` are (whether or not they exist yet)."""
    return CertFiles(directory / "ca.pem", directory / "ca-key.pem", directory / "server.pem")


def ensure_certs(directory: Path, hosts: tuple[str, ...] = HOSTS) -> CertFiles:
    """Create the CA (once) and a server certificate for ``hosts``; a server certificate that expires
    within a week is issued again. Returns the file paths."""
    files = cert_files(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if not (files.ca.exists() and files.ca_key.exists()) or _expires_soon(files.ca):
        _write_ca(files)
        files.server.unlink(missing_ok=True)
    if not files.server.exists() or _expires_soon(files.server):
        _write_server(files, hosts)
    return files


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _expires_soon(pem: Path) -> bool:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    return cert.not_valid_after_utc - _now() < RENEW_BEFORE


def _new_key() -> RSAPrivateKey:
    from cryptography.hazmat.primitives.asymmetric import rsa

    # RSA: the one key type both Java PEM readers (Kafka's and Cassandra's) and every TLS stack accept.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _key_pem(key: RSAPrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_private(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only (it holds a private key)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def _write_ca(files: CertFiles) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vista-stream"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "vista-stream local CA")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(files.ca_key, _key_pem(key))
    files.ca.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_server(files: CertFiles, hosts: tuple[str, ...]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = x509.load_pem_x509_certificate(files.ca.read_bytes())
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    key = _new_key()
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        # serverAuth for the listeners; clientAuth because the broker also connects to itself over SASL_SSL
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    _write_private(files.server, _key_pem(key) + pem + files.ca.read_bytes())
