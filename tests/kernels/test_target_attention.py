"""`target_attention` (Triton) vs the softmax attention of `models.target` (relative RMS: fp32 1e-5, fp16
1e-3), candidates independent of each other, and the model's layer giving the same result through it."""

from __future__ import annotations

import pytest
import torch

from kernels.target import naive_target_attention
from kernels.target.fused import target_attention
from tests.kernels.test_fused_recurrent_qla import assert_close

TOL = {torch.float32: 1e-5, torch.float16: 1e-3}
CASES = {  # name: (users, shared query, heads, candidates, tokens, dh)
    "shared-C37-S13": (3, True, 2, 37, 13, 16),
    "per-user-C1-S1": (2, False, 1, 1, 1, 8),
    "per-user-C20-S50-dh4": (2, False, 4, 20, 50, 4),
}


def _inputs(name: str, dtype: torch.dtype, device: torch.device) -> tuple:
    b, shared, h, c, s, dh = CASES[name]
    gen = torch.Generator().manual_seed(len(name))
    q = torch.randn(1 if shared else b, h, c, dh, generator=gen).to(dtype).to(device)
    k, v = (torch.randn(b, h, s, dh, generator=gen).to(dtype).to(device) for _ in range(2))
    mask = torch.rand(b, s, generator=gen) < 0.7
    mask[:, 0] = True  # the seeds: always there
    return q, k, v, mask.to(device)


@pytest.mark.parametrize("dtype", TOL, ids=["fp32", "fp16"])
@pytest.mark.parametrize("name", CASES)
def test_matches_reference(name: str, dtype: torch.dtype, device: torch.device, nan_empty: None) -> None:
    q, k, v, mask = _inputs(name, dtype, device)
    got = target_attention(q, k, v, mask)
    assert got.dtype == dtype
    assert_close("o", got, naive_target_attention(q, k, v, mask), TOL[dtype])


def test_no_cross_candidate_mixing(device: torch.device) -> None:
    """A candidate's output is the same alone, among others, and with the others permuted (bit for bit)."""
    q, k, v, mask = _inputs("shared-C37-S13", torch.float32, device)
    full = target_attention(q, k, v, mask)
    perm = torch.randperm(q.shape[2], generator=torch.Generator().manual_seed(0))
    assert torch.equal(target_attention(q[:, :, perm], k, v, mask), full[:, :, perm])
    assert torch.equal(target_attention(q[:, :, 5:6], k, v, mask), full[:, :, 5:6])


def test_model_layer_through_the_kernel(device: torch.device) -> None:
    """models.target's layer math (projections in torch, attention in the kernel) equals the layer itself."""
    from tests.helpers import small_model

    model = small_model(seed=0, dim=32, target_heads=2).to(device)  # dh = 16
    layer = model.scorer.layers[0]
    gen = torch.Generator().manual_seed(1)
    query = torch.randn(1, 9, 32, generator=gen).to(device)
    tokens = torch.randn(2, 11, 32, generator=gen).to(device)
    mask = torch.ones(2, 11, dtype=torch.bool, device=device)
    mask[1, 8:] = False
    with torch.no_grad():
        keys, values = layer.keys_values(tokens)
        ref = layer(query, keys, values, mask)
        q = layer.wq(layer.q_norm(query)).reshape(1, 9, 2, -1).transpose(1, 2)
        out = target_attention(q, keys, values, mask)
        got = layer.wo(out.transpose(1, 2).flatten(-2))
    assert_close("layer", got, ref)


def test_the_models_scoring_reaches_the_kernel_and_equals_torch(device: torch.device,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """VistaModel.backend = TRITON routes the scorer's target attention (no autograd) through the kernel, once
    per layer, with the logits of the torch backend; under autograd (training) torch's attention runs."""
    import kernels.target.fused as fused
    from kernels.qla import Backend
    from tests.helpers import small_model

    calls = []
    real = fused.target_attention
    monkeypatch.setattr(fused, "target_attention", lambda *a: calls.append(1) or real(*a))
    model = small_model(seed=0, dim=32, target_heads=2, target_readout=True, num_seeds=4, recent=5).to(device)
    torch.nn.init.normal_(model.scorer.w_r.weight, std=0.5)  # a trained Δ: nonzero
    gen = torch.Generator().manual_seed(3)
    seeds, recent = torch.randn(2, 4, 32, generator=gen), torch.randn(2, 5, 32, generator=gen)
    mask = torch.tensor([[True] * 5, [False, False, True, True, True]])
    cand = torch.randn(1, 7, 32, generator=gen)
    args = (cand.to(device), seeds.to(device), recent.to(device), mask.to(device))
    with torch.no_grad():
        ref = model.scorer.delta(*args)
        model.backend = Backend.TRITON
        got = model.scorer.delta(*args)
    assert len(calls) == model.cfg.target_layers
    assert_close("delta", got, ref)
    model.scorer.delta(*args)  # autograd on: the forward-only kernel is not used
    assert len(calls) == model.cfg.target_layers
