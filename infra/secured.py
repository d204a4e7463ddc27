"""The secured local profile (``VISTA_SECURITY_PROFILE=secured``, ``vista infra up --secured``).

The local servers then run the way a production cluster should, so the clients' security settings
are exercised against real servers:

- Kafka's client listener is SASL_SSL with SCRAM-SHA-512 (the SCRAM user is written into the KRaft
  metadata when the storage is formatted); the controller listener stays PLAINTEXT on loopback.
- Cassandra runs PasswordAuthenticator + CassandraAuthorizer with client-to-node TLS required; an
  application role is created and the default superuser's well-known password is replaced.

Certificates (``infra/certs.py``) and generated passwords live under ``<data_dir>/security``; so does
``client.env``, the ``VISTA_*`` variables a client of this stack needs::

    set -a; . ~/.cache/vista-stream/secured/security/client.env; set +a
    vista worker --ckpt ...

In code, :func:`client_settings` gives the same settings.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from infra.certs import CertFiles, cert_files, ensure_certs
from infra.proc import InfraError
from infra.settings import InfraSettings

KAFKA_USER = "vista"
KAFKA_MECHANISM = "SCRAM-SHA-512"
CASSANDRA_USER = "vista"
CASSANDRA_SUPERUSER = "cassandra"
CASSANDRA_DEFAULT_PASSWORD = "cassandra"


@dataclass(frozen=True)
class Credentials:
    """Generated once per data dir."""

    kafka_password: str
    cassandra_password: str
    cassandra_admin_password: str
    """The new password of Cassandra's default superuser (``cassandra``)."""


@dataclass(frozen=True)
class Material:
    """Everything the secured servers and their clients need, as files and values."""

    certs: CertFiles
    credentials: Credentials
    env_file: Path


def is_secured(settings: InfraSettings) -> bool:
    return settings.security_profile == "secured"


def secured_dir(settings: InfraSettings) -> Path:
    return settings.data_dir / "security"


def _credentials_file(settings: InfraSettings) -> Path:
    return secured_dir(settings) / "credentials.json"


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


def check_profile(settings: InfraSettings) -> None:
    """A data dir holds one profile: starting the other one on it would find servers formatted for it
    (a broker without SCRAM users, a node without roles) and never become ready. Raise InfraError."""
    has_secured = secured_dir(settings).exists()
    has_servers = settings.kafka_dir.exists() or settings.cassandra_dir.exists()
    if is_secured(settings) and has_servers and not has_secured:
        raise InfraError(f"{settings.data_dir} holds a plain local stack; the secured profile needs its own "
                         "data dir (unset VISTA_DATA_DIR to use the secured default, or `vista infra reset`)")
    if not is_secured(settings) and has_secured:
        raise InfraError(f"{settings.data_dir} holds a secured local stack; set VISTA_SECURITY_PROFILE=secured "
                         "(or `vista infra up --secured`) to run it, or use another VISTA_DATA_DIR")


def wipe(settings: InfraSettings) -> None:
    """Delete the certificates, passwords and client.env (with the servers' data: ``vista infra reset``)."""
    shutil.rmtree(secured_dir(settings), ignore_errors=True)


def ensure(settings: InfraSettings) -> Material:
    """Create (once) the certificates and passwords, and (re)write ``client.env`` for these settings."""
    directory = secured_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    ensure_certs(directory)
    creds_file = _credentials_file(settings)
    if not creds_file.exists():
        creds = Credentials(*(secrets.token_urlsafe(24) for _ in range(3)))
        _write_private(creds_file, json.dumps(asdict(creds), indent=2))
    material = load(settings)
    lines = [f"{k}={v}" for k, v in client_env(settings, material).items()]
    _write_private(material.env_file, "# VISTA_* settings of a client of this secured local stack "
                   "(written by `vista infra up --secured`)\n" + "\n".join(lines) + "\n")
    return material


def load(settings: InfraSettings) -> Material:
    """The material :func:`ensure` created; InfraError if there is none."""
    creds_file = _credentials_file(settings)
    certs = cert_files(secured_dir(settings))
    if not (creds_file.exists() and certs.ca.exists() and certs.server.exists()):
        raise InfraError(f"no secured-profile certificates/credentials under {secured_dir(settings)}; "
                         "start the stack with `vista infra up --secured` (infra.local.up)")
    creds = Credentials(**json.loads(creds_file.read_text()))
    return Material(certs, creds, secured_dir(settings) / "client.env")


def client_overrides(settings: InfraSettings, material: Material | None = None) -> dict[str, str]:
    """The client fields of settings that connect to this secured local stack (field name -> value)."""
    material = material or load(settings)
    creds = material.credentials
    return {
        "kafka_bootstrap_servers": f"127.0.0.1:{settings.kafka_port}",
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": KAFKA_MECHANISM,
        "kafka_sasl_username": KAFKA_USER,
        "kafka_sasl_password": creds.kafka_password,
        "kafka_ssl_cafile": str(material.certs.ca),
        "kafka_ssl_check_hostname": "true",
        "cassandra_contact_points": "127.0.0.1",
        "cassandra_username": CASSANDRA_USER,
        "cassandra_password": creds.cassandra_password,
        "cassandra_ssl_cafile": str(material.certs.ca),
    }


def client_settings(settings: InfraSettings, material: Material | None = None) -> InfraSettings:
    """``settings`` with the client fields of this secured local stack (the application's login)."""
    return settings.replace(**client_overrides(settings, material))


def admin_settings(settings: InfraSettings, password: str) -> InfraSettings:
    """Client settings that log in to Cassandra as the default superuser with ``password``."""
    return client_settings(settings).replace(cassandra_username=CASSANDRA_SUPERUSER, cassandra_password=password)


def client_env(settings: InfraSettings, material: Material | None = None) -> dict[str, str]:
    """The ``VISTA_*`` environment of a client (and of ``vista infra status|down``) of this stack."""
    server = {
        "security_profile": "secured",
        "data_dir": str(settings.data_dir),
        "kafka_port": str(settings.kafka_port),
        "kafka_controller_port": str(settings.kafka_controller_port),
        "cassandra_port": str(settings.cassandra_port),
        "cassandra_storage_port": str(settings.cassandra_storage_port),
    }
    return {f"VISTA_{k.upper()}": v for k, v in {**server, **client_overrides(settings, material)}.items()}
