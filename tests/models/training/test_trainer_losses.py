"""The VISTA training loss's branches: the cut-point loss over the whole catalog (small catalogs) or over
[target; shared negatives] minus log q (large ones), and the stop-gradient switches. Pure logic, tiny model."""

from __future__ import annotations

import torch

from models.config import ModelConfig
from models.training.budget import NegativeSampler
from models.training.data import EncodedSequence
from models.training.losses import batch_loss, cut_positions
from models.training.trainer import TrainConfig, train_step
from models.vista import VistaModel
from tests.helpers import encoded_sequences

NUM_ITEMS = 30


def _seqs(n: int = 6, length: int = 12) -> list[EncodedSequence]:
    return encoded_sequences(n, length, NUM_ITEMS)


def _target_model() -> VistaModel:
    torch.manual_seed(0)
    return VistaModel(ModelConfig(num_items=NUM_ITEMS, dim=16, heads=2, target_heads=2, num_seeds=4, recent=3,
                                  recon_window=4, target_readout=True, dropout=0.0))


def _item_grad(tcfg: TrainConfig, *, with_cut: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
    model = _target_model()
    seqs = _seqs()
    gen = torch.Generator().manual_seed(0)
    loss, logs = batch_loss(model, seqs, NegativeSampler(seqs, NUM_ITEMS, gen), tcfg, NUM_ITEMS, gen,
                            with_cut=with_cut)
    loss.backward()
    return model.embedding.item.weight.grad.clone(), logs


def test_both_cut_loss_forms_train_and_the_padding_row_stays_zero() -> None:
    for full_max in (NUM_ITEMS, NUM_ITEMS - 1):  # full catalog softmax, then sampled softmax with log q
        grad, logs = _item_grad(TrainConfig(window=8, cut_points=2, negatives=8, full_softmax_max_items=full_max))
        assert torch.isfinite(torch.tensor(list(logs.values()))).all(), logs
        assert logs["cut"] > 0 and logs["rec"] > 0
        assert grad[0].abs().max() == 0, "the padding row must never be trained"
        assert grad[1 : NUM_ITEMS + 1].abs().sum() > 0


def test_cut_detach_items_leaves_the_item_table_to_the_sequence_loss() -> None:
    # with the history state detached too (the configuration the presets use), nothing of the cut and
    # reconstruction losses reaches the item table: its gradient is the sequence loss's alone (full softmax
    # here, so both runs draw the same sequence loss; the cut-loss code is the same for the sampled form)
    base = dict(window=8, cut_points=2, negatives=8, cut_detach_state=True, full_softmax_max_items=NUM_ITEMS)
    detached, _ = _item_grad(TrainConfig(**base, cut_detach_items=True))
    seq_only, _ = _item_grad(TrainConfig(**base), with_cut=False)
    attached, _ = _item_grad(TrainConfig(**base, cut_detach_items=False))
    torch.testing.assert_close(detached, seq_only, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(attached, seq_only)


def test_cut_negatives_samples_only_the_cut_loss_when_the_catalog_fits_a_full_softmax() -> None:
    base = dict(window=8, cut_points=2, negatives=8)
    _, full = _item_grad(TrainConfig(**base))
    grad, sampled = _item_grad(TrainConfig(**base, cut_negatives=5))
    assert sampled["seq"] == full["seq"], "the sequence loss keeps its full softmax"
    assert sampled["cut"] != full["cut"] and torch.isfinite(torch.tensor(sampled["cut"]))
    assert grad[0].abs().max() == 0, "the padding row must never be trained"


def test_cut_positions_stay_inside_each_row_and_include_the_last_only_when_asked() -> None:
    lengths = torch.tensor([1, 5, 40])
    gen = torch.Generator().manual_seed(0)
    with_last = cut_positions(lengths, 3, gen)
    assert with_last.shape == (3, 3) and torch.equal(with_last[:, -1], lengths - 1)
    uniform = torch.stack([cut_positions(lengths, 3, gen, include_last=False) for _ in range(200)])
    assert uniform.shape == (200, 3, 3)
    assert (uniform >= 0).all() and (uniform <= (lengths - 1)[None, :, None]).all()
    assert (uniform[:, 0] == 0).all(), "a one-event row can only be cut at its only position"
    assert set(uniform[:, 2].flatten().tolist()) >= {0, 39}, "uniform cuts reach both ends of a long row"
    _, logs = _item_grad(TrainConfig(window=8, cut_points=2, negatives=8, cut_last=False))
    assert torch.isfinite(torch.tensor(list(logs.values()))).all(), logs


def test_a_step_without_the_cut_loss_trains_the_stack_alone_and_leaves_the_target_branch_untouched() -> None:
    model = _target_model()
    seqs = _seqs()
    tcfg = TrainConfig(window=8, cut_points=2, negatives=8, lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    sampler = NegativeSampler(seqs, NUM_ITEMS, gen)
    _, with_cut = batch_loss(model, seqs, sampler, tcfg, NUM_ITEMS, gen)
    _, seq_only = batch_loss(model, seqs, sampler, tcfg, NUM_ITEMS, gen, with_cut=False)
    assert set(seq_only) == {"seq", "loss"} and seq_only["seq"] == with_cut["seq"]  # full softmax: no sampling
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr)
    train_step(model, seqs, sampler, tcfg, NUM_ITEMS, gen, opt)  # a cut step first: Adam moments exist
    target = {k: v.clone() for k, v in model.scorer.layers.state_dict().items()}
    stack = {k: v.clone() for k, v in model.stack.state_dict().items()}
    train_step(model, seqs, sampler, tcfg, NUM_ITEMS, gen, opt, with_cut=False)
    for k, v in model.scorer.layers.state_dict().items():
        assert torch.equal(v, target[k]), f"{k} moved on a step without the cut loss"
    assert any(not torch.equal(v, stack[k]) for k, v in model.stack.state_dict().items())


def test_validation_runs_every_eval_every_epochs_and_always_at_the_last() -> None:
    tcfg = TrainConfig(epochs=7, eval_every=3)
    assert [e for e in range(1, 8) if tcfg.validates_after(e, out_of_time=False)] == [3, 6, 7]
    assert tcfg.validates_after(2, out_of_time=True), "the budget's last epoch is always validated"
