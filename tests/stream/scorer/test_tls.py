"""`vista serve --ssl-certfile --ssl-keyfile` serves HTTPS (uvicorn's TLS), with certificates made here by trustme;
plain HTTP is refused on that port, and a certificate without its key is a usage error."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import trustme

from tests.infra_helpers import free_port
from tests.stream.scorer.util import Fixture

pytestmark = pytest.mark.integration


def test_the_scorer_serves_https_with_the_given_certificate(tmp_path: Path, fixture: Fixture) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    trusted = ssl.create_default_context(cafile=str(ca_file))
    port = free_port()
    env = {**os.environ, "VISTA_SCORER_API_KEY": "s3cret"}
    proc = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--ckpt", str(fixture.ckpt), "--port", str(port),
                             "--model-version", fixture.version, "--ssl-certfile", str(cert_file), "--ssl-keyfile", str(key_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                assert httpx.get(f"https://127.0.0.1:{port}/healthz", verify=trusted, timeout=2).status_code == 200
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(proc.stdout.read().decode() if proc.stdout else "no output") from None
                time.sleep(0.2)
        user = next(iter(fixture.rows))
        ok = httpx.post(f"https://127.0.0.1:{port}/v1/score", verify=trusted, timeout=10,
                        json={"user_id": user, "candidates": ["1", "2"]}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["user_id"] == user
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)  # plain HTTP gets no answer
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"https://127.0.0.1:{port}/healthz", timeout=2)  # an unknown CA is not trusted
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_certificate_without_its_key_is_a_usage_error(fixture: Fixture, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "cli", "serve", "--ckpt", str(fixture.ckpt), "--ssl-certfile",
                          str(tmp_path / "c.pem")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--ssl-keyfile" in out.stderr
