"""The secured profile's certificates (no servers needed): a strict TLS client trusting only ca.pem accepts the
server certificate for 127.0.0.1 and localhost, not for another name; files are made once, keys kept private."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from infra.certs import ensure_certs


def handshake(server_pem: Path, ca: Path, server_hostname: str) -> None:
    """A TLS handshake over a socket pair: the server presents server.pem, the client verifies against ca."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(server_pem)
    client_ctx = ssl.create_default_context(cafile=str(ca))
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    a, b = socket.socketpair()
    with a, b:
        def serve() -> None:
            try:
                with server_ctx.wrap_socket(b, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass  # the client refused: its error is the one the test looks at

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with client_ctx.wrap_socket(a, server_hostname=server_hostname):
                pass
        finally:
            thread.join(timeout=10)


def test_server_certificate_verifies_for_loopback_names_only(tmp_path: Path) -> None:
    files = ensure_certs(tmp_path)
    handshake(files.server, files.ca, "127.0.0.1")
    handshake(files.server, files.ca, "localhost")
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(files.server, files.ca, "example.com")
    other_ca = ensure_certs(tmp_path / "other").ca
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(files.server, other_ca, "127.0.0.1")


def test_files_are_made_once_and_keys_are_private(tmp_path: Path) -> None:
    files = ensure_certs(tmp_path)
    before = {p: p.read_bytes() for p in (files.ca, files.ca_key, files.server)}
    assert ensure_certs(tmp_path) == files
    assert all(p.read_bytes() == content for p, content in before.items())
    assert files.ca_key.stat().st_mode & 0o077 == 0 and files.server.stat().st_mode & 0o077 == 0
