"""Per-event recurrent QLA: the oracle. One python step per position, fp32 throughout."""

from __future__ import annotations

import torch
from torch import Tensor

from kernels.qla.common import QLAResult, compute_dtype, normalized_memory, phi


def naive_recurrent_qla(
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
) -> QLAResult:
    """Same contract as `kernels.qla.qla`; exactly the recurrence of the design note, one event at a time."""
    b, t_max, h, d = q.shape
    dt = compute_dtype(q)
    qf, kf, vf = q.to(dt), k.to(dt), v.to(dt)
    state = initial_state.to(dt).clone()
    count = initial_count.to(dt).clone()
    g = torch.ones(h, dtype=dt, device=q.device) if gamma is None else gamma.to(dt).to(q.device)
    o = torch.zeros(b, t_max, h, d, dtype=dt, device=q.device)
    states_all, counts_all = [], []
    for t in range(t_max):
        live = (t < lengths).to(dt)  # [B]
        decay = 1.0 + live[:, None] * (g[None, :] - 1.0)  # [B, H]; padded rows keep their state
        kv = phi(kf[:, t])[..., :, None] * vf[:, t][..., None, :]  # [B, H, d, d]
        state = decay[..., None, None] * state + live[:, None, None, None] * kv
        count = count + live
        mem = normalized_memory(state, count, outer_phi, gamma)
        o[:, t] = torch.einsum("bhd,bhde->bhe", phi(qf[:, t]), mem)
        if state_positions is not None:
            states_all.append(state.clone())
            counts_all.append(count.clone())
    states_at = counts_at = None
    if state_positions is not None:
        stacked = torch.stack(states_all, dim=1)  # [B, T, H, d, d]
        counts = torch.stack(counts_all, dim=1)
        idx = state_positions.long()
        states_at = torch.gather(stacked, 1, idx[..., None, None, None].expand(-1, -1, h, d, d))
        counts_at = torch.gather(counts, 1, idx)
    return QLAResult(o=o.to(q.dtype), final_state=state, final_count=count, states_at=states_at, counts_at=counts_at)
