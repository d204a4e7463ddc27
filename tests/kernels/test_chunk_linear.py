"""`chunk_linear_qla` (Triton, tl.dot on [32, d] blocks) vs the naive linear recurrence, values and gradients,
with and without the fixed per-head decay; and `qla` on Backend.TRITON reaching it (right-padded rows, cut
points) vs Backend.NAIVE.

Relative-RMS tolerances: fp32 1e-5 (o, final state, states at cut points, all gradients; exact fp32 dots),
decay on or off; fp16 inputs 2e-3 and bf16 1e-2 on o (the dots take the rounded phi(q), phi(k), v and the
chunk scores as half), states 2e-3 / 1e-2.
"""

from __future__ import annotations

import pytest
import torch

from kernels.qla import Backend, qla
from kernels.qla import chunk as chunk_mod
from kernels.qla.chunk import CHUNK, chunk_linear_qla
from kernels.qla.naive import naive_chunk_linear_qla
from tests.kernels.test_fused_recurrent_qla import assert_close

TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
CASES = {  # name: (batch, T or None, cu_seqlens or None, heads, d)
    "T1": (2, 1, None, 2, 16),
    "T63-chunk-edges": (2, 2 * CHUNK - 1, None, 1, 16),
    "T70-d32": (1, 70, None, 2, 32),
    "ragged-zero-len": (1, None, (0, 5, 5, 40, 77, 77), 2, 16),
    "ragged-d64": (1, None, (0, 33, 34), 1, 64),
}
GAMMAS = (0.9, 0.3)  # per head: a slow and a fast decay (0.3^31 ~ 6e-17: the carried state all but vanishes)
DECAY = [pytest.param(False, id="no-decay"), pytest.param(True, id="decay")]


def _gamma(heads: int, decay: bool, device: torch.device) -> torch.Tensor | None:
    return torch.tensor(GAMMAS[:heads], device=device) if decay else None


def _inputs(name: str, dtype: torch.dtype, device: torch.device, grad: bool, decay: bool = False) -> tuple:
    b, t, cu, h, d = CASES[name]
    gen = torch.Generator().manual_seed(len(name) * 31 + d)
    t = cu[-1] if cu is not None else t
    n = b if cu is None else len(cu) - 1
    q, k, v = (torch.randn(b, t, h, d, generator=gen).to(dtype).to(device).requires_grad_(grad) for _ in range(3))
    m0 = torch.randn(n, h, d, d, generator=gen).to(device).requires_grad_(grad)
    c0 = torch.randint(0, 30, (n,), generator=gen).float().to(device)
    cu_t = None if cu is None else torch.tensor(cu, dtype=torch.int32, device=device)
    return (q, k, v), dict(initial_state=m0, initial_count=c0, cu_seqlens=cu_t, output_final_state=True,
                           gamma=_gamma(h, decay, device))


@pytest.mark.parametrize("decay", DECAY)
@pytest.mark.parametrize("name", CASES)
def test_values_and_gradients_fp32(name: str, decay: bool, device: torch.device, nan_empty: None) -> None:
    (q, k, v), kw = _inputs(name, torch.float32, device, grad=True, decay=decay)
    leaves = (q, k, v, kw["initial_state"])
    got, ref = {}, {}
    for out, fn in ((got, chunk_linear_qla), (ref, naive_chunk_linear_qla)):
        o, ht = fn(q, k, v, **kw)
        out["o"], out["state"] = o, ht
        weights = torch.linspace(-1, 1, o.numel(), device=device).reshape(o.shape)
        grads = torch.autograd.grad((o * weights).sum() + ht.pow(2).sum(), leaves)
        out.update(zip(("dq", "dk", "dv", "dh0"), grads))
    for key in ref:
        assert_close(key, got[key], ref[key], TOL[torch.float32])


# Triton 3.9's interpreter gets tl.dot on bf16 blocks wrong (a 16x16 bf16 product came back off by ~3e11):
# the bf16 case is checked on CUDA only (benchmarks/gpu_check.sh)
BF16 = pytest.param(torch.bfloat16, id="bf16", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="the Triton interpreter's bf16 tl.dot is wrong; checked on CUDA"))


@pytest.mark.parametrize("decay", DECAY)
@pytest.mark.parametrize("dtype", [pytest.param(torch.float16, id="fp16"), BF16])
def test_half_inputs(dtype: torch.dtype, decay: bool, device: torch.device) -> None:
    (q, k, v), kw = _inputs("ragged-zero-len", dtype, device, grad=False, decay=decay)
    o, ht = chunk_linear_qla(q, k, v, **kw)
    ref_o, ref_ht = naive_chunk_linear_qla(q, k, v, **kw)
    assert o.dtype == dtype and ht.dtype == torch.float32
    assert_close("o", o, ref_o, TOL[dtype])
    assert_close("state", ht, ref_ht, TOL[dtype])


@pytest.mark.parametrize("decay", DECAY)
def test_split_and_resume(decay: bool, device: torch.device) -> None:
    """The first 40 positions, then the rest from that final state and count: the one-call o and state."""
    (q, k, v), kw = _inputs("T70-d32", torch.float32, device, grad=False, decay=decay)
    o, ht = chunk_linear_qla(q, k, v, **kw)
    o1, h1 = chunk_linear_qla(q[:, :40], k[:, :40], v[:, :40], **kw)
    o2, h2 = chunk_linear_qla(q[:, 40:], k[:, 40:], v[:, 40:], initial_state=h1, gamma=kw["gamma"],
                              initial_count=kw["initial_count"] + 40, output_final_state=True)
    assert_close("o", torch.cat([o1, o2], dim=1), o)
    assert_close("state", h2, ht)


@pytest.mark.parametrize("decay", DECAY)
def test_ragged_equals_per_sequence(decay: bool, device: torch.device) -> None:
    (q, k, v), kw = _inputs("ragged-zero-len", torch.float32, device, grad=False, decay=decay)
    o, ht = chunk_linear_qla(q, k, v, **kw)
    cu = kw["cu_seqlens"].tolist()
    for i in range(len(cu) - 1):
        lo, hi = cu[i], cu[i + 1]
        o_i, h_i = chunk_linear_qla(q[:, lo:hi], k[:, lo:hi], v[:, lo:hi], initial_state=kw["initial_state"][i : i + 1],
                                    initial_count=kw["initial_count"][i : i + 1], gamma=kw["gamma"],
                                    output_final_state=True)
        if hi > lo:
            assert_close(f"o[{i}]", o_i, o[:, lo:hi])
        assert_close(f"state[{i}]", h_i, ht[i : i + 1])


def test_no_initial_state_and_no_final_state(device: torch.device) -> None:
    (q, k, v), _ = _inputs("T1", torch.float32, device, grad=False)
    o, ht = chunk_linear_qla(q, k, v)
    assert ht is None
    assert_close("o", o, naive_chunk_linear_qla(q, k, v)[0])


@pytest.mark.parametrize("d", [8, 12], ids=["d8-below-dot-minimum", "d12-not-pow2"])
def test_rejects_head_widths_the_dots_cannot_take(d: int, device: torch.device) -> None:
    q = torch.randn(1, 3, 1, d, device=device)
    with pytest.raises(ValueError, match="power of two"):
        chunk_linear_qla(q, q, q)


def test_rejects_a_learned_decay(device: torch.device) -> None:
    """The kernels give no gradient for gamma: one that asks for it is refused, and runs without a graph."""
    q = torch.randn(1, 3, 1, 16, device=device)
    gamma = torch.tensor([0.9], device=device, requires_grad=True)
    with pytest.raises(ValueError, match="Backend.TORCH"):
        chunk_linear_qla(q, q, q, gamma=gamma)
    with pytest.raises(ValueError, match=r"gamma must be \[H\]"):
        chunk_linear_qla(q, q, q, gamma=torch.tensor([0.9, 0.9], device=device))
    with torch.no_grad():
        chunk_linear_qla(q, q, q, gamma=gamma)


# qla's right-padded rows with cut points: lengths cross chunk edges (31 | 32 | 33, 70 = 2 chunks + 6), cuts at
# the first position, at chunk ends and starts, unsorted, duplicated, in the last partial chunk
QLA_LENGTHS = (70, 33, 1, 64)
QLA_CUTS = ((69, 0, 31, 32, 31), (32, 31, 5, 0, 32), (0, 0, 0, 0, 0), (63, 62, 33, 1, 40))


@pytest.mark.parametrize("decay", DECAY)
def test_qla_triton_takes_the_chunked_kernel(decay: bool, device: torch.device, nan_empty: None,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Backend.TRITON on the linear form runs `chunk_qla` (decay or not, cut points or not) and equals
    Backend.NAIVE: o at real positions (0 at padded ones), final state and count, states and counts at the cuts,
    and the gradients of q, k, v, the initial state through all of them."""
    calls = []
    real = chunk_mod.chunk_qla
    monkeypatch.setattr(chunk_mod, "chunk_qla", lambda inputs: calls.append(1) or real(inputs))
    b, t, h, d = len(QLA_LENGTHS), max(QLA_LENGTHS), 2, 16
    gen = torch.Generator().manual_seed(11)
    q, k, v = (torch.randn(b, t, h, d, generator=gen).to(device).requires_grad_() for _ in range(3))
    m0 = torch.randn(b, h, d, d, generator=gen).to(device).requires_grad_()
    lengths = torch.tensor(QLA_LENGTHS, device=device)
    kw = dict(initial_state=m0, initial_count=torch.tensor([3.0, 0.0, 7.0, 1.0], device=device), lengths=lengths,
              outer_phi=False, gamma=_gamma(h, decay, device), output_final_state=True,
              state_positions=torch.tensor(QLA_CUTS, device=device))
    live = torch.arange(t, device=device)[None, :] < lengths[:, None]
    got, ref = {}, {}
    for out, backend in ((got, Backend.TRITON), (ref, Backend.NAIVE)):
        o, final = qla(q, k, v, backend=backend, **kw)
        out.update(o=o[live], state=final.state, count=final.count, states_at=final.states_at,
                   counts_at=final.counts_at)
        weights = torch.linspace(-1, 1, final.states_at.numel(), device=device).reshape(final.states_at.shape)
        loss = o[live].pow(2).sum() + final.state.sum() + (final.states_at * weights).sum()
        out.update(zip(("dq", "dk", "dv", "dh0"), torch.autograd.grad(loss, (q, k, v, m0))))
        if backend == Backend.TRITON:
            assert (o[~live] == 0).all(), "padded positions must be written as zeros"
    assert len(calls) == 1
    for key in ref:
        assert_close(key, got[key], ref[key], 0.0 if key.startswith("count") else TOL[torch.float32])


def test_qla_triton_zero_length_rows(device: torch.device, nan_empty: None) -> None:
    """Rows with no events keep their state and count (no cut points possible there)."""
    b, t, h, d = 3, 5, 2, 16
    gen = torch.Generator().manual_seed(12)
    q, k, v = (torch.randn(b, t, h, d, generator=gen).to(device) for _ in range(3))
    kw = dict(initial_state=torch.randn(b, h, d, d, generator=gen).to(device),
              initial_count=torch.tensor([2.0, 0.0, 4.0], device=device), lengths=torch.tensor([0, 5, 0], device=device),
              outer_phi=False, gamma=_gamma(h, True, device), output_final_state=True)
    o, final = qla(q, k, v, backend=Backend.TRITON, **kw)
    ref_o, ref = qla(q, k, v, backend=Backend.NAIVE, **kw)
    assert_close("o", o[1], ref_o[1])
    assert (o[0] == 0).all() and (o[2] == 0).all()
    assert_close("state", final.state, ref.state)
    assert torch.equal(final.state[[0, 2]], kw["initial_state"][[0, 2]])
    assert torch.equal(final.count, ref.count)
