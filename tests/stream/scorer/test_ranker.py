"""The scorer serves what was measured to be better: Δ only when the checkpoint says it passed validation, a
long candidate list as retrieve-then-rank, and every response says which ranker ordered it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.checkpoint import save_checkpoint
from models.config import ModelConfig
from models.training.rerank import with_reranker
from models.vista import VistaModel
from models.vocab import ItemVocab
from schemas.events import InteractionEvent
from schemas.requests import ScoreRequest
from stream.apply import SourcedEvent, apply_events
from stream.scorer.config import ScorerConfig
from stream.scorer.engine import RERANKED, STACK, ScoringEngine
from tests.fakes import MemoryStore

NUM_ITEMS = 30
ITEMS = [str(i) for i in range(1, NUM_ITEMS + 1)]


def _whole_model() -> VistaModel:
    """A whole model whose Δ is not zero (W_r perturbed), so the two rankers differ."""
    torch.manual_seed(0)
    whole = with_reranker(VistaModel(ModelConfig(num_items=NUM_ITEMS, dim=16, heads=2, target_heads=2)))
    with torch.no_grad():
        whole.scorer.w_r.weight.normal_(0, 2.0)
    return whole


def _engine(tmp_path: Path, model: VistaModel, meta: dict | None, **config) -> ScoringEngine:
    vocab = ItemVocab(ITEMS, oov_buckets=2)
    version = save_checkpoint(tmp_path / "ckpt", model, vocab, meta)
    store = MemoryStore()
    events = [SourcedEvent(InteractionEvent(user_id="u", item_id=str(1 + (7 * t) % NUM_ITEMS), timestamp=100 + t),
                           "t:0", t) for t in range(12)]
    store.write(apply_events(model, vocab, version, {}, events).rows)
    return ScoringEngine(ScorerConfig(ckpt=tmp_path / "ckpt", **config), store)


def _served(engine: ScoringEngine, candidates: list[str]) -> dict[str, float]:
    [ranking], _ = engine.rank_batch([ScoreRequest(user_id="u", candidates=candidates)])
    return dict(zip((candidates[j] for j in ranking.order), ranking.scores))


def _parts(engine: ScoringEngine, candidates: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """u·e and u·e + Δ of the stored user, computed directly from the model."""
    summary = engine.records(["u"])["u"].summary
    rows = torch.tensor([engine.vocab.index(c) for c in candidates])
    with torch.no_grad():
        stack = engine.model.scorer.sequence_logits(summary.last_h, engine.model.embedding.item(rows)[None])[0]
        whole = engine.model.score(summary, rows)[0]
    return stack, whole


@pytest.mark.parametrize("passed", [True, False])
def test_the_checkpoints_verdict_decides_the_ranker(tmp_path: Path, passed: bool) -> None:
    verdict = {"reranker": {"passed": passed, "rerank_top": 100, "val_NDCG@10": 0.1, "stack_val_NDCG@10": 0.2}}
    engine = _engine(tmp_path, _whole_model(), verdict)
    stack, whole = _parts(engine, ITEMS[:20])
    expected = whole if passed else stack
    assert not torch.allclose(stack, whole), "the test needs a Δ that changes the scores"
    served = _served(engine, ITEMS[:20])
    assert torch.allclose(torch.tensor([served[c] for c in ITEMS[:20]]), expected, atol=1e-5)
    [ranking], _ = engine.rank_batch([ScoreRequest(user_id="u", candidates=ITEMS[:5])])
    body = ranking.response()
    assert body.ranker == (RERANKED if passed else STACK)
    assert body.reranked == (5 if passed else 0)
    assert ("passed" if passed else "failed") in engine.ranker_reason


def test_a_stack_model_and_the_setting_override(tmp_path: Path) -> None:
    torch.manual_seed(1)
    stack_only = VistaModel(ModelConfig(num_items=NUM_ITEMS, dim=16, heads=2))
    assert _engine(tmp_path / "a", stack_only, None).ranker == STACK
    failed = {"reranker": {"passed": False, "rerank_top": 100}}
    assert _engine(tmp_path / "b", _whole_model(), failed, ranker="reranked").ranker == RERANKED
    assert _engine(tmp_path / "c", _whole_model(), None).ranker == RERANKED  # jointly trained: served whole


def test_reranked_scores_are_independent_of_the_other_candidates(tmp_path: Path) -> None:
    engine = _engine(tmp_path, _whole_model(), {"reranker": {"passed": True, "rerank_top": 100}})
    full = _served(engine, ITEMS)
    for subset in (ITEMS[3:9], ITEMS[::-1][:4], [ITEMS[11]]):
        alone = _served(engine, subset)
        for c in subset:
            assert alone[c] == pytest.approx(full[c], abs=1e-5)


def test_a_long_list_is_retrieve_then_rank(tmp_path: Path) -> None:
    """Hand-checked cascade: u·e picks the top 8 of 30, those 8 come first ordered by u·e + Δ, then the other
    22 by u·e."""
    engine = _engine(tmp_path, _whole_model(), {"reranker": {"passed": True, "rerank_top": 8}})
    assert engine.rerank_top == 8
    stack, whole = _parts(engine, ITEMS)
    top = set(stack.topk(8).indices.tolist())
    head = sorted(top, key=lambda j: -float(whole[j]))
    tail = sorted(set(range(NUM_ITEMS)) - top, key=lambda j: -float(stack[j]))
    [ranking], _ = engine.rank_batch([ScoreRequest(user_id="u", candidates=ITEMS)])
    assert ranking.order == head + tail
    assert ranking.reranked == 8
    assert ranking.response().items[0].score == pytest.approx(float(whole[head[0]]), abs=1e-5)
