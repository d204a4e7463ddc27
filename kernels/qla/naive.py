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
