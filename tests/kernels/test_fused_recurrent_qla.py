"""Triton fused recurrent QLA, forward and backward, vs the naive oracle and the torch scan.

Relative-RMS tolerances: fp32 1e-5 (o, states, gradients), fp64 1e-12, fp16 inputs 1e-3 on o (rounded to fp16).

On a CPU-only machine these run under Triton's interpreter (see conftest.py), which
costs milliseconds per (row, head, position): shapes stay small.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import pytest
import torch

from kernels.qla import Backend, QLAState, qla
from tests.helpers import rel_err

TOL = 1e-5


def run(backend: Backend, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
        **kw) -> tuple[torch.Tensor, QLAState]:
    """`qla` on one backend, with the final state (and the cut states) returned."""
    o, final = qla(q, k, v, backend=backend, output_final_state=True, **kw)
    assert final is not None
    return o, final


def assert_close(name: str, got: torch.Tensor, ref: torch.Tensor, tol: float = TOL) -> None:
    """Relative norm error ‖got − ref‖ / ‖ref‖ over the whole tensor, with a readable failure."""
    assert got.shape == ref.shape, f"{name}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(got).all(), f"{name}: non-finite values (an output left unwritten?)"
    err = rel_err(got, ref)
    assert err <= tol, f"{name}: relative error {err:.3e} > {tol:.0e}"


@dataclass(frozen=True)
class Case:
    name: str
    batch: int
    t_max: int
    heads: int
    d: int
    lengths: tuple[int, ...]
    outer_phi: bool = True
    decay: bool = False
    cuts: tuple[tuple[int, ...], ...] | None = None  # per row; each < the row's length
    dtype: torch.dtype = torch.float32
    fresh: tuple[bool, ...] = ()  # rows starting from an empty state (count 0)

    def __str__(self) -> str:
        return self.name


CASES = [
    Case("T1", 2, 1, 2, 16, (1, 0)),
    Case("T1-decay-cut", 2, 1, 2, 16, (1, 1), decay=True, cuts=((0,), (0,)), fresh=(True, False)),
    Case("T7-mixed-zero-len", 3, 7, 2, 16, (7, 0, 3), fresh=(False, True, True)),
    Case("T7-decay-cuts-unsorted-dupes", 3, 7, 2, 16, (7, 2, 5), decay=True,
         cuts=((6, 0, 3, 3), (1, 0, 1, 1), (4, 2, 0, 4))),
    # linear at d >= 16: Backend.TRITON takes the chunked kernels (the fused ones keep the d = 8 linear cases)
    Case("T7-nophi-decay", 2, 7, 2, 16, (4, 7), outer_phi=False, decay=True, fresh=(True, False)),
    Case("T63-phi", 2, 63, 1, 16, (63, 40)),
    Case("T63-nophi-decay-cuts", 2, 63, 1, 8, (63, 17), outer_phi=False, decay=True, cuts=((0, 31, 62), (16, 3, 9))),
    Case("T500-decay-cuts", 2, 500, 1, 16, (500, 333), decay=True, cuts=((499, 0, 250), (332, 100, 7))),
    Case("all-empty", 2, 3, 2, 16, (0, 0), cuts=None),
    Case("d1", 2, 5, 1, 1, (5, 2)),
    Case("d2-decay", 2, 5, 1, 2, (5, 2), decay=True),
    Case("d4", 2, 5, 2, 4, (3, 5)),
    Case("d32-cuts", 2, 5, 1, 32, (5, 4), cuts=((4, 1), (3, 0))),
    Case("d64-decay", 1, 5, 1, 64, (5,), decay=True),
    Case("fp64", 2, 7, 2, 16, (7, 4), decay=True, cuts=((2, 6), (3, 0)), dtype=torch.float64),
]


def _inputs(case: Case, device: torch.device) -> tuple[tuple[torch.Tensor, ...], dict]:
    gen = torch.Generator().manual_seed(zlib.crc32(case.name.encode()))
    shape = (case.batch, case.t_max, case.heads, case.d)
    q, k, v = (torch.randn(shape, generator=gen, dtype=torch.float64).to(case.dtype).to(device) for _ in range(3))
    state_dtype = torch.float64 if case.dtype == torch.float64 else torch.float32
    h0 = torch.randn(case.batch, case.heads, case.d, case.d, generator=gen, dtype=torch.float64)
    c0 = torch.randint(1, 50, (case.batch,), generator=gen).to(torch.float64)
    for row, fresh in enumerate(case.fresh):
        if fresh:
            h0[row], c0[row] = 0.0, 0.0
    kwargs = dict(
        initial_state=h0.to(state_dtype).to(device),
        initial_count=c0.float().to(device),
        lengths=torch.tensor(case.lengths, device=device),
        outer_phi=case.outer_phi,
        gamma=torch.linspace(0.9, 0.9999, case.heads, device=device) if case.decay else None,
        state_positions=torch.tensor(case.cuts, device=device) if case.cuts is not None else None,
    )
    return (q, k, v), kwargs


def _real(o: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Outputs at real positions only (padded ones are unspecified by contract)."""
    mask = torch.arange(o.shape[1], device=o.device)[None, :] < lengths[:, None]
    return o[mask]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_naive_and_scan(case: Case, device: torch.device, nan_empty: None) -> None:
    (q, k, v), kw = _inputs(case, device)
    o, got = run(Backend.TRITON, q, k, v, **kw)
    tol = 1e-12 if case.dtype == torch.float64 else TOL
    for ref_backend in (Backend.NAIVE, Backend.TORCH):
        ref_name = ref_backend.value
        ref_o, ref = run(ref_backend, q, k, v, **kw)
        if ref_o.numel() and bool((kw["lengths"] > 0).any()):
            assert_close(f"{ref_name} o", _real(o, kw["lengths"]), _real(ref_o, kw["lengths"]), tol)
        assert_close(f"{ref_name} state", got.state, ref.state, tol)
        assert_close(f"{ref_name} count", got.count, ref.count, 0.0)
        if case.cuts is not None:
            assert_close(f"{ref_name} states_at", got.states_at, ref.states_at, tol)
            assert_close(f"{ref_name} counts_at", got.counts_at, ref.counts_at, 0.0)
        else:
            assert got.states_at is None and got.counts_at is None
    assert o.dtype == q.dtype and got.state.dtype == kw["initial_state"].dtype
    padded = torch.arange(case.t_max, device=device)[None, :] >= kw["lengths"][:, None]
    assert (o[padded] == 0).all(), "padded positions must be written as zeros"


def test_fp16_inputs(device: torch.device, nan_empty: None) -> None:
    """Half inputs: state stays fp32 (≤ 1e-5); o is rounded to fp16 by both sides."""
    case = Case("fp16", 2, 7, 2, 16, (7, 5), decay=True, cuts=((1, 6), (4, 0)), dtype=torch.float16)
    (q, k, v), kw = _inputs(case, device)
    o, got = run(Backend.TRITON, q, k, v, **kw)
    ref_o, ref = run(Backend.NAIVE, q, k, v, **kw)
    assert o.dtype == torch.float16 and got.state.dtype == torch.float32
    assert_close("o", _real(o, kw["lengths"]), _real(ref_o, kw["lengths"]), 1e-3)
    assert_close("state", got.state, ref.state)
    assert_close("states_at", got.states_at, ref.states_at)


def test_strided_inputs_and_dispatch(device: torch.device) -> None:
    """q, k, v as non-contiguous views (as the model's split_heads makes them)."""
    gen = torch.Generator().manual_seed(3)
    b, t, h, d = 2, 6, 2, 8
    packed = torch.randn(b, t, 4 * h * d, generator=gen).to(device)
    q, k, v, _ = (x.reshape(b, t, h, d) for x in packed.chunk(4, dim=-1))
    assert not q.is_contiguous()
    kw = dict(initial_state=torch.randn(b, h, d, d, generator=gen).to(device),
              initial_count=torch.tensor([2.0, 0.0], device=device), lengths=torch.tensor([6, 3], device=device),
              gamma=torch.tensor([0.95, 0.99], device=device))
    o, got = run(Backend.TRITON, q, k, v, **kw)
    ref_o, ref = run(Backend.NAIVE, q, k, v, **kw)
    assert_close("o", _real(o, kw["lengths"]), _real(ref_o, kw["lengths"]))
    assert_close("state", got.state, ref.state)


def test_empty_time_axis(device: torch.device) -> None:
    b, h, d = 2, 2, 4
    h0 = torch.randn(b, h, d, d, device=device)
    o, final = run(Backend.TRITON, *(torch.zeros(b, 0, h, d, device=device) for _ in range(3)), initial_state=h0,
                   initial_count=torch.tensor([1.0, 0.0], device=device),
                   lengths=torch.zeros(b, dtype=torch.long, device=device))
    assert o.shape == (b, 0, h, d)
    assert torch.equal(final.state, h0)


def _small(device: torch.device, d: int = 4, t: int = 3, **overrides) -> tuple[tuple[torch.Tensor, ...], dict]:
    q, k, v = (torch.randn(2, t, 1, d, device=device) for _ in range(3))
    kw = dict(initial_state=torch.zeros(2, 1, d, d, device=device), initial_count=torch.zeros(2, device=device),
              lengths=torch.tensor([t, 1], device=device))
    kw.update(overrides)
    return (q, k, v), kw


@pytest.mark.parametrize("d", [12, 128], ids=["d12-not-pow2", "d128-too-wide"])
def test_rejects_unsupported_head_width(d: int, device: torch.device) -> None:
    (q, k, v), kw = _small(device, d=d)
    with pytest.raises(ValueError, match="power of two"):
        run(Backend.TRITON, q, k, v, **kw)


GRAD_CASES = [
    Case("grad-T37-phi-cuts", 3, 37, 2, 4, (37, 1, 20), cuts=((36, 0, 5, 5), (0, 0, 0, 0), (19, 3, 2, 19)),
         dtype=torch.float64, fresh=(False, True, False)),
    Case("grad-T37-phi-decay-zero-len", 3, 37, 2, 4, (37, 0, 20), decay=True, dtype=torch.float64),
    Case("grad-T37-nophi-decay-cuts", 2, 37, 2, 4, (37, 1), outer_phi=False, decay=True,
         cuts=((36, 10), (0, 0)), dtype=torch.float64),
    Case("grad-T7-fp32", 2, 7, 2, 16, (7, 3), cuts=((2, 6), (0, 1))),
    Case("grad-T1-fp32-decay", 2, 1, 1, 8, (1, 0), decay=True),
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=str)
def test_gradients_match_naive(case: Case, device: torch.device) -> None:
    """Gradients of q, k, v and the initial state through o, the final state and the cut states; across the
    backward's recompute chunks (T = 37 > BWD_CHUNK). fp64: 1e-12 (the algebra is exact); fp32: 1e-5."""
    (q, k, v), kw = _inputs(case, device)
    leaves = [q, k, v, kw["initial_state"]]
    for x in leaves:
        x.requires_grad_(True)
    lengths = kw["lengths"]
    grads = {}
    for backend in (Backend.TRITON, Backend.NAIVE):
        o, final = run(backend, q, k, v, **kw)
        loss = (_real(o, lengths).double() ** 2).sum() + final.state.double().pow(2).sum()
        if final.states_at is not None:
            weights = torch.arange(final.states_at.shape[1], device=device, dtype=torch.float64)
            loss = loss + (final.states_at.double() * weights[None, :, None, None, None]).sum()
        grads[backend] = torch.autograd.grad(loss, leaves)
    tol = 1e-12 if case.dtype == torch.float64 else TOL
    for name, got, ref in zip(("dq", "dk", "dv", "dh0"), grads[Backend.TRITON], grads[Backend.NAIVE]):
        assert got.dtype == ref.dtype
        assert_close(name, got, ref, tol)


def test_rejects_a_learned_decay(device: torch.device) -> None:
    """The decay is data to the kernel: a gamma that needs grad is refused (Backend.TORCH learns it)."""
    (q, k, v), kw = _small(device, gamma=torch.tensor([0.9], device=device, requires_grad=True))
    with pytest.raises(ValueError, match="Backend.TORCH"):
        run(Backend.TRITON, q, k, v, **kw)
    with torch.no_grad():  # the stream worker's way: no graph wanted, so it runs
        run(Backend.TRITON, q, k, v, **kw)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(lengths=[4, 1]), "lengths must lie in"),
        (dict(lengths=[-1, 1]), "lengths must lie in"),
        (dict(state_positions=[[0], [1]]), "state_positions"),
        (dict(state_positions=[[-1], [0]]), "state_positions"),
        (dict(state_positions=[0, 0]), r"state_positions must be \[B, C\]"),
        (dict(gamma=[0.9, 0.9]), r"gamma must be \[H\]"),
    ],
    ids=["length-past-T", "negative-length", "cut-past-length", "negative-cut", "cuts-not-2d", "gamma-shape"],
)
def test_rejects_bad_ranges(overrides: dict, message: str, device: torch.device) -> None:
    (q, k, v), kw = _small(device, **{key: torch.tensor(val, device=device) for key, val in overrides.items()})
    with pytest.raises(ValueError, match=message):
        run(Backend.TRITON, q, k, v, **kw)
