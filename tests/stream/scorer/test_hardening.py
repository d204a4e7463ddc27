"""The scorer under hostile or broken input, over real HTTP and Cassandra: bodies past the limit are refused
before they are read whole, only JSON is accepted, a configured API key is required, a 500 carries no
internals, and a corrupt stored row fails its own request only."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from stream.scorer.config import ScorerConfig
from stream.scorer.engine import ScoringEngine
from stream.scorer.service import create_app
from stream.store import SummaryStore
from tests.stream.scorer.util import Fixture, ServerThread, make_fixture

pytestmark = pytest.mark.integration
KEY = "s3cret-key"


@pytest.fixture(scope="module")
def hardened(tmp_path_factory: pytest.TempPathFactory, cassandra_session) -> Iterator[tuple[Fixture, str]]:  # noqa: ANN001
    fx = make_fixture(tmp_path_factory.mktemp("hardened") / "ckpt", n_users=3)
    rows = list(fx.rows.values())
    corrupt = rows[0].model_copy(update={"recent_h": b"\x00not a tensor blob"})
    SummaryStore(cassandra_session).write([corrupt, *rows[1:]])
    engine = ScoringEngine(ScorerConfig(ckpt=fx.ckpt, max_body_bytes=4096, api_key=KEY),
                           SummaryStore(cassandra_session))
    with ServerThread(create_app(engine, cassandra_session)) as srv:
        yield fx, srv.url


def _post(url: str, body: bytes | None = None, *, token: str | None = KEY, content_type: str = "application/json",
          json: dict | None = None) -> httpx.Response:
    headers = {"content-type": content_type}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    if json is not None:
        import json as _json

        body = _json.dumps(json).encode()
    return httpx.post(f"{url}/v1/score", content=body, headers=headers, timeout=30)


def test_an_api_key_is_required_when_configured(hardened: tuple[Fixture, str]) -> None:
    fx, url = hardened
    user = list(fx.rows)[1]
    request = {"user_id": user, "candidates": ["1", "2"]}
    assert _post(url, json=request, token=None).status_code == 401
    assert _post(url, json=request, token="wrong").status_code == 401
    assert _post(url, json=request).status_code == 200
    assert httpx.get(f"{url}/v1/items").status_code == 401
    assert httpx.get(f"{url}/v1/items", headers={"authorization": f"Bearer {KEY}"}).status_code == 200
    assert httpx.get(f"{url}/healthz").status_code == 200, "liveness stays open"


def test_bodies_past_the_limit_are_refused_declared_or_streamed(hardened: tuple[Fixture, str]) -> None:
    _, url = hardened
    assert _post(url, b"x" * 10_000).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must stop reading by itself
        for _ in range(64):
            yield b"y" * 1024

    r = httpx.post(f"{url}/v1/score", content=chunks(), timeout=30,
                   headers={"content-type": "application/json", "authorization": f"Bearer {KEY}"})
    assert r.status_code == 413


def test_only_json_is_accepted(hardened: tuple[Fixture, str]) -> None:
    _, url = hardened
    assert _post(url, b'{"user_id": "u", "candidates": ["1"]}', content_type="text/plain").status_code == 415


def test_a_corrupt_row_fails_its_own_request_only(hardened: tuple[Fixture, str]) -> None:
    fx, url = hardened
    bad, *good = list(fx.rows)
    jobs = [bad, *good, bad, *good]
    with ThreadPoolExecutor(len(jobs)) as pool:  # concurrent: they share micro-batches
        answers = list(pool.map(lambda u: _post(url, json={"user_id": u, "candidates": ["1", "2", "3"]}), jobs))
    for user, r in zip(jobs, answers):
        if user == bad:
            assert r.status_code == 500 and bad in r.json()["message"] and "backfill" in r.json()["message"]
        else:
            assert r.status_code == 200, r.text
    metrics = httpx.get(f"{url}/metrics").text
    assert 'vista_scorer_errors_total{kind="unreadable_row"}' in metrics


def test_a_500_carries_no_internals(tmp_path: Path, cassandra_session) -> None:  # noqa: ANN001
    fx = make_fixture(tmp_path / "ckpt", n_users=1)
    engine = ScoringEngine(ScorerConfig(ckpt=fx.ckpt), SummaryStore(cassandra_session))

    def boom(requests):  # noqa: ANN001, ANN202
        raise RuntimeError("secret-internal-detail at /srv/private/path")

    engine.rank_batch = boom  # type: ignore[method-assign]
    with ServerThread(create_app(engine, cassandra_session)) as srv:
        r = _post(srv.url, json={"user_id": "u", "candidates": ["1"]}, token=None)
    assert r.status_code == 500 and "secret" not in r.text and "/srv" not in r.text


def test_readiness_covers_every_serving_path(tmp_path: Path, cassandra_session) -> None:  # noqa: ANN001
    fx = make_fixture(tmp_path / "ckpt", n_users=1)
    engine = ScoringEngine(ScorerConfig(ckpt=fx.ckpt), SummaryStore(cassandra_session))
    alive = {"kafka_path": True}
    app = create_app(engine, cassandra_session, serving_paths={"kafka_path": lambda: alive["kafka_path"]})
    with ServerThread(app) as srv:
        assert httpx.get(f"{srv.url}/readyz").status_code == 200
        alive["kafka_path"] = False  # its thread died
        r = httpx.get(f"{srv.url}/readyz")
        assert r.status_code == 503 and r.json()["checks"]["kafka_path"] == "stopped"
