"""The memory readout (models/memory_read.py): each candidate reads the stored M^l/n with its own query, an exact
kernel sum over the whole history at a cost fixed in its length, served from the stored state."""

from __future__ import annotations

import torch

from kernels.qla import phi
from models.config import ModelConfig
from models.vista import VistaModel
from stream.rows import rows_from_states, summary_from_rows
from tests.helpers import batch_of, random_sequences, rel_err, small_model


def test_an_untrained_read_adds_nothing() -> None:
    """W_o starts at zero: a fresh model with the readout ranks exactly as the same weights without it."""
    torch.manual_seed(0)
    with_read = VistaModel(ModelConfig(num_items=40, dim=32, heads=4, memory_readout=True)).eval()
    states = with_read.update(with_read.init_state(2),
                              batch_of(random_sequences(2, 30, 40, torch.Generator().manual_seed(1), min_len=5)))
    summary = with_read.summarize(states)
    assert summary.memory is not None and summary.memory.shape == (2, 2, 4, 8, 8)
    stack_only = with_read.scorer(with_read.embedding.item(torch.arange(1, 41))[None], None, summary.recent_h,
                                  summary.recent_mask, summary.last_h)
    assert torch.equal(with_read.score(summary, torch.arange(1, 41)), stack_only)


def test_the_read_is_a_kernel_sum_over_every_past_event() -> None:
    """One layer: m(c) = (1/n) Σ_i (phi(q_c)·phi(k_i)) <v_i, W_o^T x_c> per head (x_c = LayerNorm(e_c)), over all n events, however long
    ago; the fixed-size state gives exactly that sum."""
    model = small_model(seed=5, layers=1, target_readout=False, decay=False, memory_readout=True).double()
    seq = random_sequences(1, 200, 40, torch.Generator().manual_seed(5), min_len=200)
    states = model.update(model.init_state(1), batch_of(seq))
    candidates = torch.tensor([3, 17, 29])
    got = model.memory_read(model.embedding.item(candidates)[None], model.summarize(states).memory)[0]

    items, actions, stamps = (torch.tensor(x)[None] for x in seq[0])
    x = model.embedding(items, actions, stamps, torch.tensor([-1]))
    layer = model.stack.layers[0]
    _, k, v, _ = layer.split_heads(layer.norm(x))  # [1, n, H, d]
    e = model.embedding.item(candidates)  # [C, D]
    read = model.memory_read
    q = phi(read.query[0](read.norm(e))).reshape(3, model.cfg.heads, -1)  # [C, H, d]
    w = (read.norm(e) @ read.out[0].weight).reshape(3, model.cfg.heads, -1)  # W_o^T x_c split by heads
    kernel = torch.einsum("chd,nhd->cnh", q, phi(k[0]))
    values = torch.einsum("nhd,chd->cnh", v[0], w)
    want = (kernel * values).sum((1, 2)) / len(seq[0][0]) * model.cfg.memory_read_scale
    assert rel_err(got, want) <= 1e-10


def test_the_read_from_a_stored_row_equals_the_in_process_one() -> None:
    """The scorer rebuilds M/n from the row's state blob and count (fp32, as stored): the same logits."""
    model = small_model(seed=6, memory_readout=True)
    states = model.update(model.init_state(3),
                          batch_of(random_sequences(3, 40, 40, torch.Generator().manual_seed(6), min_len=1)))
    summary = model.summarize(states)
    rows = rows_from_states(["a", "b", "c"], "v", states, summary)
    served = summary_from_rows(rows, model)
    served.seeds, served.recent_h = served.seeds.float(), served.recent_h.float()
    candidates = torch.arange(1, 41)
    assert rel_err(served.memory, summary.memory) <= 1e-7
    assert rel_err(model.score(served, candidates), model.score(summary, candidates)) <= 1e-3  # fp16 seeds
    assert summary_from_rows(rows).memory is None  # a read without the model: the stack's rows, as before
