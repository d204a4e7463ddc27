"""The residual reranker Δ: zero at initialization (the whole model ranks as the stack, bit for bit), and its
loss moves nothing of the stack, the item table or the user vector's LayerNorm."""

from __future__ import annotations

import torch

from models.config import ModelConfig
from models.training.data import EncodedSequence
from models.training.rerank import FROZEN, RerankConfig, rerank_loss, with_reranker
from models.vista import VistaModel
from tests.helpers import encoded_sequences

NUM_ITEMS = 30


def _stack() -> VistaModel:
    torch.manual_seed(0)
    return VistaModel(ModelConfig(num_items=NUM_ITEMS, dim=16, heads=2, target_heads=2)).eval()


def _seqs(n: int = 6, length: int = 14) -> list[EncodedSequence]:
    return encoded_sequences(n, length, NUM_ITEMS)


def test_an_untrained_reranker_scores_exactly_as_the_stack() -> None:
    stack = _stack()
    whole = with_reranker(stack)
    from models.training.data import to_batch

    events = to_batch(_seqs())
    with torch.no_grad():
        s_stack = stack.score(stack.summarize(stack.update(stack.init_state(6), events)), torch.arange(1, 31))
        s_whole = whole.score(whole.summarize(whole.update(whole.init_state(6), events)), torch.arange(1, 31))
    assert torch.equal(s_stack, s_whole), "Δ must be exactly zero before training"


def test_the_reranker_loss_reaches_only_the_reranker() -> None:
    whole = with_reranker(_stack())
    whole.train()
    loss, logs = rerank_loss(whole, _seqs(), RerankConfig(window=8, rerank_top=5), NUM_ITEMS,
                             torch.Generator().manual_seed(0))
    loss.backward()
    for name, p in whole.named_parameters():
        if name.startswith(FROZEN):
            assert p.grad is None or p.grad.abs().max() == 0, f"{name} got a gradient from the reranker loss"
    assert whole.scorer.w_r.weight.grad.abs().sum() > 0, "W_r (zero at init) must learn"
    assert torch.isfinite(torch.tensor(logs["loss"]))


def test_later_items_are_the_users_own_future_in_the_window() -> None:
    from models.training.rerank import _later_items

    target_pad = torch.tensor([[5, 6, 7, 0], [9, 8, 0, 0]])
    cuts = torch.tensor([[1, 0], [0, 1]])
    later = _later_items(target_pad, cuts)
    assert [set(row.tolist()) for row in later] == [{6, 7}, {5, 6, 7}, {9, 8}, {8}]


def test_validation_users_are_a_fixed_random_sample_not_the_first_ones() -> None:
    from models.training.data import LeaveOneOut
    from models.training.loop import validation_users

    split = LeaveOneOut([], list(range(100)), [])
    sample = validation_users(split, 10)
    assert sample == validation_users(split, 10) and len(set(sample)) == 10
    assert sample != list(range(10)) and sample == sorted(sample)
    assert validation_users(split, 500) == list(range(100))
