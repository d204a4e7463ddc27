"""Backend.NAIVE, the oracle: the recurrence of `kernels.qla`, one python step per position."""

from __future__ import annotations

import torch
from torch import Tensor

from kernels.qla.utils import QLAInputs, QLAState, gather_at, normalized_memory, phi


def naive_recurrent_qla(inputs: QLAInputs) -> tuple[Tensor, QLAState]:
    """(o, final state) one event at a time, exactly as written in the design note."""
    q, lengths, gamma = inputs.q, inputs.lengths, inputs.gamma
    b, t_max, h, d = q.shape
    dt = inputs.dtype
    qf, kf, vf = q.to(dt), inputs.k.to(dt), inputs.v.to(dt)
    state = inputs.initial_state.clone()
    count = inputs.initial_count.clone()
    g = torch.ones(h, dtype=dt, device=q.device) if gamma is None else gamma
    o = torch.zeros(b, t_max, h, d, dtype=dt, device=q.device)
    states_all, counts_all = [], []
    for t in range(t_max):
        live = (t < lengths).to(dt)  # [B]
        decay = 1.0 + live[:, None] * (g[None, :] - 1.0)  # [B, H]; padded rows keep their state
        kv = phi(kf[:, t])[..., :, None] * vf[:, t][..., None, :]  # [B, H, d, d]
        state = decay[..., None, None] * state + live[:, None, None, None] * kv
        count = count + live
        mem = normalized_memory(state, count, inputs.outer_phi, gamma)
        o[:, t] = torch.einsum("bhd,bhde->bhe", phi(qf[:, t]), mem)
        if inputs.state_positions is not None:
            states_all.append(state.clone())
            counts_all.append(count.clone())
    states_at = counts_at = None
    if inputs.state_positions is not None:
        states_at, counts_at = gather_at(torch.stack(states_all, dim=1), torch.stack(counts_all, dim=1),
                                         inputs.state_positions)
    return o.to(q.dtype), QLAState(state, count, states_at, counts_at)


def naive_state_update(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    initial_state: Tensor,
    initial_count: Tensor,
    cu_seqlens: Tensor,
    outer_phi: bool = False,
    gamma: Tensor | None = None,
) -> tuple[Tensor, QLAState]:
    """The oracle of `kernels.qla.state_update` (same arguments, out of place): each user's packed events
    run one at a time from its state; o comes back packed [1, total, H, d]."""
    n = cu_seqlens.numel() - 1
    o = torch.zeros_like(q)
    states, counts = [], []
    for i in range(n):
        lo, hi = int(cu_seqlens[i]), int(cu_seqlens[i + 1])
        inputs = QLAInputs(q[:, lo:hi], k[:, lo:hi], v[:, lo:hi], initial_state[i : i + 1],
                           initial_count[i : i + 1].to(initial_state.dtype), torch.tensor([hi - lo]), outer_phi,
                           gamma, None)
        o_i, final = naive_recurrent_qla(inputs)
        o[:, lo:hi] = o_i
        states.append(final.state)
        counts.append(initial_count[i : i + 1] + (hi - lo))
    if not n:
        return o, QLAState(initial_state.clone(), initial_count.clone())
    return o, QLAState(torch.cat(states), torch.cat(counts))


def naive_chunk_linear_qla(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    gamma: Tensor | None = None,
    initial_state: Tensor | None = None,
    initial_count: Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The oracle of `kernels.qla.chunk.chunk_linear_qla` (same arguments): the linear recurrence (decayed by
    gamma [H] when given), one event at a time per sequence, differentiable by autograd."""
    b, t, h, d = q.shape
    bounds = [(i, 0, t) for i in range(b)] if cu_seqlens is None else [
        (0, int(cu_seqlens[i]), int(cu_seqlens[i + 1])) for i in range(cu_seqlens.numel() - 1)]
    dt = torch.float64 if q.dtype == torch.float64 else torch.float32
    outs, finals = [], []
    for n, (row, lo, hi) in enumerate(bounds):
        m0 = (initial_state[n : n + 1] if initial_state is not None
              else torch.zeros(1, h, d, d, dtype=dt, device=q.device))
        c0 = (initial_count[n : n + 1] if initial_count is not None else torch.zeros(1, device=q.device))
        inputs = QLAInputs(q[row : row + 1, lo:hi], k[row : row + 1, lo:hi], v[row : row + 1, lo:hi], m0, c0,
                           torch.tensor([hi - lo], device=q.device), False, gamma, None)
        o_n, final = naive_recurrent_qla(inputs)
        outs.append(o_n)
        finals.append(final.state)
    o = torch.cat(outs, dim=1 if cu_seqlens is not None else 0) if outs else torch.zeros_like(q)
    return o, (torch.cat(finals) if finals else q.new_zeros(0, h, d, d, dtype=dt)) if output_final_state else None
