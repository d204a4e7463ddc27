"""Shared signature, result type and dispatch of the causal QLA op.

Layout: q, k, v are [B, T, H, d] (right-padded; `lengths` [B] says how many
positions of each row are real). State M is [B, H, d, d] fp32 and the count n
is [B] fp32. For each real position t of a row:

    M_t = gamma * M_{t-1} + phi(k_t)^T v_t          N_t = N_{t-1} + 1   (events seen)
    o_t = phi(q_t) · phi(M_t / n_t)                  (outer_phi=True)
    o_t = phi(q_t) · (M_t / n_t)                     (outer_phi=False)

with phi = SiLU, the per-head normalizer n_t = sum_{s<=t} gamma^(t-s), which is
N_t without decay and (1 - gamma^N_t) / (1 - gamma) with it — a function of the
event count alone, so the state stores one count — and M/n := 0 where N = 0.
Padded positions leave the state unchanged and their outputs are unspecified.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from kernels.dispatch import Backend


@dataclass
class QLAResult:
    """Outputs of one QLA pass.

    o:            [B, T, H, d] per-position outputs (dtype of q).
    final_state:  [B, H, d, d] fp32 state after each row's last real position.
    final_count:  [B] fp32 count after each row's last real position.
    states_at:    [B, C, H, d, d] fp32 states after the positions in `state_positions` (or None).
    counts_at:    [B, C] fp32 counts at those positions (or None).
    """

    o: Tensor
    final_state: Tensor
    final_count: Tensor
    states_at: Tensor | None = None
    counts_at: Tensor | None = None


def phi(x: Tensor) -> Tensor:
    """The QLA feature map (SiLU)."""
    return F.silu(x)


def compute_dtype(t: Tensor) -> torch.dtype:
    """States and sums are fp32 at least; fp64 inputs (reference recomputes) stay fp64."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def normalizer(count: Tensor, gamma: Tensor | None, heads: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Per-head normalizer n [..., H] from the event count N [...] (see module doc); 1 where N == 0."""
    count = count.to(dtype)
    if gamma is None:
        n = count[..., None].expand(*count.shape, heads)
    else:
        g = gamma.to(dtype).clamp(max=1.0 - 1e-7)
        n = (1.0 - torch.pow(g, count[..., None])) / (1.0 - g)
    return torch.where(count[..., None] > 0, n, torch.ones_like(n))


def normalized_memory(state: Tensor, count: Tensor, outer_phi: bool, gamma: Tensor | None = None) -> Tensor:
    """phi(M / n) (or M / n) for state [..., H, d, d] and count [...]; M / n := 0 where N == 0."""
    n = normalizer(count, gamma, state.shape[-3], state.dtype)
    mem = state / n[..., None, None]
    mem = torch.where((count > 0)[..., None, None, None], mem, torch.zeros_like(mem))
    return phi(mem) if outer_phi else mem


def validate_inputs(q: Tensor, k: Tensor, v: Tensor, initial_state: Tensor, initial_count: Tensor, lengths: Tensor) -> None:
    """Shape checks shared by every backend (clear errors instead of broadcasting surprises)."""
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"q, k, v must all be [B, T, H, d]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    b, _, h, d = q.shape
    if tuple(initial_state.shape) != (b, h, d, d):
        raise ValueError(f"initial_state must be [B, H, d, d] = {(b, h, d, d)}; got {tuple(initial_state.shape)}")
    if tuple(initial_count.shape) != (b,) or tuple(lengths.shape) != (b,):
        raise ValueError("initial_count and lengths must be [B]")


def qla(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    initial_state: Tensor,
    initial_count: Tensor,
    lengths: Tensor,
    outer_phi: bool = True,
    gamma: Tensor | None = None,
    state_positions: Tensor | None = None,
    backend: Backend = Backend.TORCH,
) -> QLAResult:
    """Run causal QLA over right-padded rows starting from a given state.

    gamma: optional per-head decay [H] in (0, 1]; None means no decay (the paper).
    state_positions: optional [B, C] long indices of positions whose post-update
        state is returned (training cut points); each must be < the row's length.
    """
    validate_inputs(q, k, v, initial_state, initial_count, lengths)
    if backend == Backend.TORCH:
        from kernels.qla.scan import scan_qla

        return scan_qla(q, k, v, initial_state=initial_state, initial_count=initial_count, lengths=lengths,
                        outer_phi=outer_phi, gamma=gamma, state_positions=state_positions)
    if backend == Backend.NAIVE:
        from kernels.qla.naive import naive_recurrent_qla

        return naive_recurrent_qla(q, k, v, initial_state=initial_state, initial_count=initial_count, lengths=lengths,
                                   outer_phi=outer_phi, gamma=gamma, state_positions=state_positions)
    if backend == Backend.TRITON:
        from kernels.qla.fused_recurrent import fused_recurrent_qla

        return fused_recurrent_qla(q, k, v, initial_state=initial_state, initial_count=initial_count, lengths=lengths,
                                   outer_phi=outer_phi, gamma=gamma, state_positions=state_positions)
    raise ValueError(f"unknown backend {backend!r}")
