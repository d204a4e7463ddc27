"""Each baseline learns a tiny dataset, scores users independently of their batch, and keeps the protocol."""

from __future__ import annotations

import pytest
import torch

from models.baselines import build_baseline
from models.baselines.popular import MostPopular
from models.baselines.train import BaselineTrainConfig, right_aligned, train_baseline
from models.training.data import EncodedSequence
from models.training.evaluate import evaluate
from tests.helpers import rel_err

TINY = {"sasrec": dict(dim=32, heads=2, max_len=20, dropout=0.0),
        "hstu": dict(dim=32, heads=2, dropout=0.0),
        "sim": dict(dim=32, top_k=4, recent=2, dropout=0.0, cut_points=8)}


@pytest.mark.parametrize("kind", sorted(TINY))
def test_baseline_overfits_tiny_chain(kind: str, chain_split) -> None:
    """The next item is the successor of the last one: every model must learn it (popularity cannot)."""
    ds, split = chain_split
    torch.manual_seed(0)
    model = build_baseline(kind, len(ds.vocab), **TINY[kind])
    # a fixed number of epochs, never a wall-clock budget: the result must not depend on the machine's load
    summary = train_baseline(model, split, len(ds.vocab),
                             BaselineTrainConfig(epochs=40, lr=1e-2, batch_size=8, patience=40, eval_every=10, negatives=32,
                                                 time_budget_s=3600, seed=0), log=lambda r: None)
    test = evaluate(model.score_fn(), split.test, len(ds.vocab))
    popular = evaluate(MostPopular(len(ds.vocab)).fit(split.train).score_fn(), split.test, len(ds.vocab))
    assert test["HR@5"] >= 0.8, (kind, test, summary["epochs"])
    assert test["NDCG@10"] > popular["NDCG@10"] + 0.3, (test, popular)


@pytest.mark.parametrize("kind", sorted(TINY))
def test_scores_do_not_depend_on_the_batch(kind: str) -> None:
    """Padding to a longer neighbour's length must not change a user's scores (masks are right)."""
    torch.manual_seed(1)
    model = build_baseline(kind, 25, **TINY[kind]).eval()
    gen = torch.Generator().manual_seed(0)
    hists = [EncodedSequence(f"u{i}", torch.randint(1, 26, (n,), generator=gen), torch.zeros(n, dtype=torch.long),
                             torch.arange(n)) for i, n in enumerate((3, 17, 1, 9))]
    together = model.score_fn()(hists)
    assert together.shape == (4, 25)
    for row, h in enumerate(hists):
        alone = model.score_fn()([h])[0]
        assert rel_err(together[row], alone) <= 1e-5, (kind, row)


def test_oov_items_are_padding_not_an_index_error() -> None:
    model = build_baseline("sasrec", 10, dim=16, heads=2, max_len=5).eval()
    h = EncodedSequence("u", torch.tensor([3, 11, 40, 2]), torch.zeros(4, dtype=torch.long), torch.arange(4))
    assert torch.isfinite(model.score_fn()([h])).all()


def test_sasrec_sees_only_its_window() -> None:
    """SASRec is a windowed model: events older than max_len cannot change its scores."""
    model = build_baseline("sasrec", 20, dim=16, heads=2, max_len=4).eval()
    tail = torch.tensor([5, 6, 7, 8])
    a = EncodedSequence("a", torch.cat([torch.tensor([1, 2, 3]), tail]), torch.zeros(7, dtype=torch.long), torch.arange(7))
    b = EncodedSequence("b", torch.cat([torch.tensor([9, 9]), tail]), torch.zeros(6, dtype=torch.long), torch.arange(6))
    scores = model.score_fn()([a, b])
    assert rel_err(scores[0], scores[1]) <= 1e-6


def test_sim_retrieves_the_most_similar_history_items() -> None:
    """With top_k = 1 the attention output is the value of the single most similar history item."""
    model = build_baseline("sim", 6, dim=8, top_k=1, recent=1, dropout=0.0).eval()
    with torch.no_grad():
        model.item.weight.copy_(torch.eye(7, 8) * 3)
    items = right_aligned([torch.tensor([2, 4, 5])])
    emb, keys, values, short = model._history(items)
    cand = torch.tensor([[4]])
    logit = model._logits(cand, items, emb, keys, values, short)
    expect = (model.item(cand) * (model.w_o(values[:, 1:2]) + short[:, None])).sum(-1)
    assert rel_err(logit, expect) <= 1e-6


def test_unknown_baseline_and_bad_config_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown baseline"):
        build_baseline("gru4rec", 10)
    with pytest.raises(ValueError, match="max_len"):
        build_baseline("sasrec", 10, max_len=0)
    with pytest.raises(ValueError, match="extra"):
        build_baseline("hstu", 10, windw=3)


def test_sampled_softmax_is_logq_corrected_cross_entropy_by_hand() -> None:
    """Above full_softmax_max_items the loss is CE over [target, shared negatives], logits minus log q."""
    from models.baselines.train import LossContext, next_item_loss
    from models.training.budget import NegativeSampler

    torch.manual_seed(0)
    train = [EncodedSequence("u", torch.tensor([1, 2, 2, 3, 7]), torch.zeros(5, dtype=torch.long), torch.arange(5))]
    table = torch.randn(11, 4)
    hidden, targets = torch.randn(3, 4), torch.tensor([2, 3, 7])
    cfg = BaselineTrainConfig(full_softmax_max_items=5, negatives=6)
    sampler = NegativeSampler(train, 10, torch.Generator().manual_seed(1))
    loss = next_item_loss(hidden, targets, table, LossContext(cfg, 10, sampler, sampler.generator))
    neg, neg_logq = NegativeSampler(train, 10, torch.Generator().manual_seed(1)).sample(6)
    logq = sampler.log_probs
    expect = 0.0
    for row in range(3):
        t = int(targets[row])
        pos = hidden[row] @ table[t] - logq[t - 1]
        others = [hidden[row] @ table[n] - q for n, q in zip(neg.tolist(), neg_logq) if n != t]
        expect += -(pos - torch.logsumexp(torch.stack([pos, *others]), 0)) / 3
    assert abs(loss.item() - expect.item()) <= 1e-5
    full = next_item_loss(hidden, targets, table, LossContext(BaselineTrainConfig(), 10, sampler, sampler.generator))
    assert abs(full.item() - torch.nn.functional.cross_entropy(hidden @ table[1:].T, targets - 1).item()) <= 1e-6
