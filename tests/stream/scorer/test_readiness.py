"""/readyz fails while Cassandra is down and recovers when it is back; scoring meanwhile is 503, never a
silent cold start. Uses a private Cassandra (own ports and data dir): the shared one is never stopped."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infra import cassandra
from infra.settings import InfraSettings
from stream.scorer.engine import ScorerConfig, ScoringEngine
from stream.scorer.service import connect_store, create_app
from tests.infra_helpers import private_cassandra as private_node
from tests.stream.scorer.util import ServerThread, make_fixture

pytestmark = pytest.mark.integration


@pytest.fixture()
def private_cassandra(infra_stack: InfraSettings, tmp_path: Path) -> Iterator[InfraSettings]:
    with private_node(infra_stack, tmp_path / "private", cassandra_request_timeout_s=3) as settings:
        yield settings


def _wait_status(url: str, status: int, timeout: float) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(url, timeout=10)
        if r.status_code == status:
            return r
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} still {r.status_code} after {timeout}s: {r.text}")
        time.sleep(0.5)


def test_readiness_fails_while_cassandra_is_down_and_recovers(private_cassandra: InfraSettings,
                                                              tmp_path: Path) -> None:
    settings = private_cassandra
    fx = make_fixture(tmp_path / "ckpt", n_users=1)
    session, store = connect_store(settings)
    store.write(list(fx.rows.values()))
    user = next(iter(fx.rows))
    engine = ScoringEngine(ScorerConfig(ckpt=fx.ckpt), store)
    body = {"user_id": user, "candidates": ["1", "2"]}
    with ServerThread(create_app(engine, session, close_session=True, ready_timeout_s=2)) as srv:
        assert httpx.get(f"{srv.url}/readyz").json()["ready"] is True
        assert httpx.post(f"{srv.url}/v1/score", json=body).json()["freshness"]["events_seen"] > 0

        cassandra.stop(settings)
        down = _wait_status(f"{srv.url}/readyz", 503, timeout=30).json()
        assert down["ready"] is False and down["checks"]["model"] == "ok" and down["checks"]["cassandra"] != "ok"
        assert httpx.get(f"{srv.url}/healthz").status_code == 200  # alive, just not ready
        r = httpx.post(f"{srv.url}/v1/score", json=body, timeout=30)
        assert r.status_code == 503 and "summary store unavailable" in r.json()["message"]
        assert 'vista_scorer_ready 0.0' in httpx.get(f"{srv.url}/metrics").text

        cassandra.start(settings)
        _wait_status(f"{srv.url}/readyz", 200, timeout=90)
        deadline = time.monotonic() + 30
        while (r := httpx.post(f"{srv.url}/v1/score", json=body, timeout=30)).status_code != 200:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.5)
        assert r.json()["freshness"]["events_seen"] == fx.rows[user].events_seen  # the stored row, not a cold start
