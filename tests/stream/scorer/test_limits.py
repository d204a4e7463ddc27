"""Limits and bad input over HTTP (422 with a clear message), startup errors, the row cache, `vista score`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from stream.scorer.engine import ScorerConfig, ScoringEngine, UnknownModelError
from stream.store import SummaryStore
from tests.stream.scorer.conftest import MAX_CANDIDATES
from tests.stream.scorer.util import Fixture, ServerThread, make_fixture

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("body, needle", [
    ({"user_id": "u", "candidates": []}, "candidates: List should have at least 1 item"),
    ({"user_id": "u", "candidates": ["1", "2", "1"]}, "duplicate candidates: ['1']"),
    ({"user_id": "u", "candidates": [str(i) for i in range(MAX_CANDIDATES + 1)]},
     f"{MAX_CANDIDATES + 1} candidates exceed the limit of {MAX_CANDIDATES}"),
    ({"candidates": ["1"]}, "user_id: Field required"),
    ({"user_id": "", "candidates": ["1"]}, "user_id: String should have at least 1 character"),
    ({"user_id": "u", "candidates": "1,2"}, "candidates: Input should be a valid list"),
    ({"user_id": "u", "candidates": ["1"], "top_k": 0}, "top_k: Input should be greater than or equal to 1"),
    ({"user_id": "u", "candidates": ["1"], "extra": 1}, "extra: Extra inputs are not permitted"),
    ([1, 2], "body must be a JSON object"),
], ids=["empty", "duplicates", "over-cap", "no-user", "empty-user", "not-a-list", "top-k-0", "extra-field",
        "not-an-object"])
def test_bad_requests_get_422_with_a_clear_message(server: ServerThread, body: object, needle: str) -> None:
    r = httpx.post(f"{server.url}/v1/score", json=body)
    assert r.status_code == 422, r.text
    assert needle in r.json()["message"], r.json()["message"]


def test_malformed_json_gets_422(server: ServerThread) -> None:
    r = httpx.post(f"{server.url}/v1/score", content=b'{"user_id": "u", "candidates": [1,', 
                   headers={"content-type": "application/json"})
    assert r.status_code == 422 and "body is not valid JSON" in r.json()["message"]
    assert "vista_scorer_errors_total{kind=\"invalid\"}" in httpx.get(f"{server.url}/metrics").text


def test_integer_ids_are_accepted_as_strings(server: ServerThread) -> None:
    r = httpx.post(f"{server.url}/v1/score", json={"user_id": "u-int", "candidates": [1, 2, 3]})
    assert r.status_code == 200 and {it["item_id"] for it in r.json()["items"]} == {"1", "2", "3"}


def test_missing_or_wrong_version_model_is_a_startup_error(tmp_path: Path, fixture: Fixture) -> None:
    with pytest.raises(UnknownModelError, match="does not exist"):
        ScoringEngine(ScorerConfig(ckpt=tmp_path / "nope"), store=None)
    with pytest.raises(UnknownModelError, match=f"has model_version {fixture.version}, expected 0123456789abcdef"):
        ScoringEngine(ScorerConfig(ckpt=fixture.ckpt, expected_model_version="0123456789abcdef"), store=None)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    with pytest.raises(UnknownModelError, match="missing model.safetensors"):
        ScoringEngine(ScorerConfig(ckpt=broken), store=None)
    out = subprocess.run([sys.executable, "-m", "cli", "serve", "--ckpt", str(fixture.ckpt), "--model-version",
                          "0123456789abcdef", "--port", "1"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "expected 0123456789abcdef" in out.stderr, out.stderr


def test_cache_serves_rows_within_its_freshness_bound(tmp_path: Path, cassandra_session) -> None:  # noqa: ANN001
    fx = make_fixture(tmp_path / "ckpt", n_users=2)
    store = SummaryStore(cassandra_session)
    rows = list(fx.rows.values())
    store.write([rows[0]])
    engine = ScoringEngine(ScorerConfig(ckpt=fx.ckpt, cache_ttl_s=1.5), store)
    user = rows[0].user_id
    first = engine.records([user])[user]
    store.write([rows[1].model_copy(update={"user_id": user})])  # a newer row arrives
    assert engine.records([user])[user] is first  # within the bound: the cached record
    time.sleep(1.6)
    assert engine.records([user])[user].freshness.events_seen == rows[1].events_seen  # past it: re-read


def test_vista_score_prints_a_ranked_table(fixture: Fixture, server: ServerThread) -> None:
    user = next(iter(fixture.rows))
    out = subprocess.run([sys.executable, "-m", "cli", "score", "--user", user, "--all-items", "--top-k", "5",
                          "--url", server.url], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"user {user}  model {fixture.version}")
    assert lines[1].startswith("ranker stack+target-attention (reranked 40 of 40)")  # a whole model, served whole
    assert lines[2].split() == ["rank", "item", "score", "known"] and len(lines) == 3 + 5
    out = subprocess.run([sys.executable, "-m", "cli", "score", "--user", user, "--candidates", "1,2,zzz",
                          "--url", server.url], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "no (OOV)" in out.stdout, out.stderr
    out = subprocess.run([sys.executable, "-m", "cli", "score", "--user", user, "--candidates", "1,1",
                          "--url", server.url], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "HTTP 422: candidates: Value error, duplicate candidates" in out.stderr
