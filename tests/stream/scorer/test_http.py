"""Issue tests over real HTTP and the shared Cassandra: scores == in-process model on the same stored
seeds, candidate independence, cold start, top_k, batching of concurrent requests, metrics."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

from models.vista import UserSummary
from stream.rows import summary_from_rows
from stream.scorer.client import ScorerClient
from tests.stream.scorer.util import NUM_ITEMS, Fixture, ServerThread

pytestmark = pytest.mark.integration
TOL = 1e-6
OOV = ["never-seen-a", "never-seen-b"]


def in_process(fx: Fixture, summary: UserSummary, candidates: list[str]) -> dict[str, float]:
    """The reference: the loaded model scoring the stored seeds directly."""
    seeds = summary.seeds.float() if summary.seeds is not None else None
    summary = UserSummary(seeds, summary.recent_items, summary.recent_h.float())
    with torch.no_grad():
        logits = fx.model.score(summary, fx.vocab.encode(candidates))[0]
    return dict(zip(candidates, logits.tolist()))


def got(resp) -> dict[str, float]:  # noqa: ANN001
    return {it.item_id: it.score for it in resp.items}


def assert_close(a: dict[str, float], b: dict[str, float]) -> None:
    assert a.keys() == b.keys()
    worst = max(abs(a[k] - b[k]) for k in a)
    assert worst <= TOL, f"max abs score difference {worst:.3g} > {TOL}"


def test_scores_through_http_equal_in_process(fixture: Fixture, client: ScorerClient) -> None:
    candidates = [str(i) for i in range(1, NUM_ITEMS + 1)] + OOV
    for user, row in fixture.rows.items():
        resp = client.score(user, candidates)
        assert resp.model_version == fixture.version and resp.user_id == user
        assert_close(got(resp), in_process(fixture, summary_from_rows([row]), candidates))
        assert resp.freshness.events_seen == row.events_seen > 0
        assert resp.freshness.last_event_ts == row.last_event_ts
        assert resp.freshness.updated_at is not None
        scores = [it.score for it in resp.items]
        assert scores == sorted(scores, reverse=True) and [it.rank for it in resp.items] == list(range(1, 43))
        assert {it.item_id for it in resp.items if not it.known} == set(OOV)


def test_concurrent_requests_are_batched_and_stay_exact(fixture: Fixture, server: ServerThread) -> None:
    """Many users with candidate lists of different lengths at once: batched (padded) == one by one."""
    rng = random.Random(3)
    users = list(fixture.rows) + ["cold-" + fixture.version]
    jobs = []
    for i in range(48):
        user = users[i % len(users)]
        cands = rng.sample([str(c) for c in range(1, NUM_ITEMS + 1)], rng.randint(1, 30)) + OOV[: i % 3]
        jobs.append((user, cands))

    def one(job: tuple[str, list[str]]) -> dict[str, float]:
        with ScorerClient(server.url) as c:
            return got(c.score(job[0], job[1]))

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, jobs))
    for (user, cands), answer in zip(jobs, answers):
        row = fixture.rows.get(user)
        summary = summary_from_rows([row]) if row else fixture.model.summarize(fixture.model.init_state(1))
        assert_close(answer, in_process(fixture, summary, cands))
    metrics = httpx.get(f"{server.url}/metrics").text
    sizes = [ln for ln in metrics.splitlines() if ln.startswith("vista_scorer_batch_size_count")]
    assert sizes and float(sizes[0].split()[-1]) >= 1


def test_candidate_independence_through_http(fixture: Fixture, client: ScorerClient) -> None:
    user = next(iter(fixture.rows))
    full = [str(i) for i in range(1, NUM_ITEMS + 1)] + OOV
    base = got(client.score(user, full))
    rng = random.Random(0)
    for _ in range(4):
        subset = rng.sample(full, rng.randint(1, len(full)))
        part = got(client.score(user, subset))
        assert_close(part, {k: base[k] for k in subset})
    assert_close(got(client.score(user, list(reversed(full)))), base)


def test_cold_start_user_gets_the_empty_history_summary(fixture: Fixture, client: ScorerClient,
                                                        server: ServerThread) -> None:
    candidates = ["1", "2", "3", OOV[0]]
    resp = client.score(f"nobody-{fixture.version}", candidates)
    assert resp.cold_start and not client.score(next(iter(fixture.rows)), candidates).cold_start
    assert resp.freshness.events_seen == 0
    assert resp.freshness.last_event_ts is None and resp.freshness.updated_at is None
    cold = fixture.model.summarize(fixture.model.init_state(1))
    assert_close(got(resp), in_process(fixture, cold, candidates))
    metrics = httpx.get(f"{server.url}/metrics").text
    assert any(ln.startswith("vista_scorer_cold_starts_total") and float(ln.split()[-1]) >= 1
               for ln in metrics.splitlines())


def test_top_k_returns_the_best_k_in_order(fixture: Fixture, client: ScorerClient) -> None:
    user = next(iter(fixture.rows))
    full = [str(i) for i in range(1, NUM_ITEMS + 1)]
    everything = client.score(user, full).items
    top = client.score(user, full, top_k=5).items
    assert [it.item_id for it in top] == [it.item_id for it in everything[:5]]
    assert [it.rank for it in top] == [1, 2, 3, 4, 5]
    assert len(client.score(user, full[:3], top_k=10).items) == 3  # k larger than the list: all of them


def test_health_ready_metrics_and_items(fixture: Fixture, server: ServerThread, client: ScorerClient) -> None:
    assert client.health()["model_version"] == fixture.version
    assert client.ready()
    assert client.items() == [str(i) for i in range(1, NUM_ITEMS + 1)]
    text = httpx.get(f"{server.url}/metrics").text
    for name in ("vista_scorer_requests_total", "vista_scorer_request_seconds_bucket", "vista_scorer_cache_hit_ratio",
                 "vista_scorer_errors_total", "vista_scorer_batch_size_bucket"):
        assert name in text, name


def test_fast_json_rendering_equals_the_validated_response(fixture: Fixture, cassandra_session) -> None:  # noqa: ANN001
    from schemas.requests import ScoreRequest, ScoreResponse
    from stream.scorer.engine import ScorerConfig, ScoringEngine
    from stream.store import SummaryStore

    engine = ScoringEngine(ScorerConfig(ckpt=fixture.ckpt), SummaryStore(cassandra_session))
    reqs = [ScoreRequest(user_id=u, candidates=["5", "1", OOV[0]], top_k=2, request_id="r1") for u in fixture.rows]
    reqs.append(ScoreRequest(user_id=f"nobody-{fixture.version}", candidates=["2", "3"]))
    rankings, stats = engine.rank_batch(reqs)
    assert stats.requests == len(reqs) and stats.cold_starts == 1 and stats.oov_candidates == len(fixture.rows)
    for r in rankings:
        assert ScoreResponse.model_validate_json(r.to_json()) == r.response()
