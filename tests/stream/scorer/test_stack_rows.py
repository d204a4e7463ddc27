"""A checkpoint without the target readout (the general preset) writes rows without seeds, and the scorer
serves them over HTTP exactly as the in-process model scores (u·e only)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.checkpoint import load_checkpoint
from stream.rows import summary_from_rows
from stream.scorer.client import ScorerClient
from stream.scorer.engine import ScorerConfig, ScoringEngine
from stream.scorer.service import create_app
from stream.store import SummaryStore
from tests.stream.scorer.util import NUM_ITEMS, ServerThread, make_fixture

pytestmark = pytest.mark.integration


def test_stack_only_rows_hold_no_seeds_and_are_served(tmp_path: Path, cassandra_session) -> None:  # noqa: ANN001
    fx = make_fixture(tmp_path / "ckpt", target_readout=False, recent=0)
    assert all(row.seeds is None for row in fx.rows.values()), "nothing computes seeds for a stack-only model"
    store = SummaryStore(cassandra_session)
    store.write(list(fx.rows.values()))
    stored = store.read(list(fx.rows), fx.version)
    for user, row in stored.items():
        assert row is not None and row.seeds is None, f"user {user}: a seeds cell was stored"
        assert row.recent_h == fx.rows[user].recent_h and row.state == fx.rows[user].state

    model, vocab, _ = load_checkpoint(fx.ckpt)
    candidates = [str(i) for i in range(1, NUM_ITEMS + 1)]
    engine = ScoringEngine(ScorerConfig(ckpt=fx.ckpt), SummaryStore(cassandra_session))
    with ServerThread(create_app(engine, cassandra_session)) as srv, ScorerClient(srv.url) as client:
        for user, row in fx.rows.items():
            resp = client.score(user, candidates)
            # the reference: u = LayerNorm(h_T) of the stored newest h^L against every candidate embedding
            summary = summary_from_rows([row])
            assert summary.seeds is None
            with torch.no_grad():
                want = model.scorer.sequence_logits(summary.last_h.float(),
                                                    model.embedding.item(vocab.encode(candidates))[None])[0]
            got = {it.item_id: it.score for it in resp.items}
            worst = max(abs(got[c] - w) for c, w in zip(candidates, want.tolist()))
            assert worst <= 1e-5, f"user {user}: max score difference {worst:.3g}"
            assert resp.freshness.events_seen == row.events_seen


def test_a_memory_readout_model_is_served_from_the_stored_state(tmp_path: Path, cassandra_session) -> None:  # noqa: ANN001
    """The lifelong model (issue 20) reads each row's state blob and scores u·e + the memory read, as in process."""
    fx = make_fixture(tmp_path / "ckpt", target_readout=False, recent=0, memory_readout=True)
    SummaryStore(cassandra_session).write(list(fx.rows.values()))
    model, vocab, _ = load_checkpoint(fx.ckpt)
    candidates = [str(i) for i in range(1, NUM_ITEMS + 1)]
    engine = ScoringEngine(ScorerConfig(ckpt=fx.ckpt), SummaryStore(cassandra_session))
    with ServerThread(create_app(engine, cassandra_session)) as srv, ScorerClient(srv.url) as client:
        for user, row in fx.rows.items():
            got = {it.item_id: it.score for it in client.score(user, candidates).items}
            summary = summary_from_rows([row], model)
            summary.recent_h = summary.recent_h.float()
            with torch.no_grad():
                want = model.score(summary, vocab.encode(candidates))[0]
                stack = model.scorer.sequence_logits(summary.last_h, model.embedding.item(vocab.encode(candidates))[None])[0]
            assert (want - stack).abs().max() > 1e-3, "the fixture's memory read must move the scores"
            worst = max(abs(got[c] - w) for c, w in zip(candidates, want.tolist()))
            assert worst <= 1e-5, f"user {user}: max score difference {worst:.3g}"
