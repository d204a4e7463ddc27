"""Parallel QLA in plain torch: prefix states by cumulative sum, then all outputs at once.

Memory is O(B·T·H·d²) per call, so callers process long histories in time
chunks (see `models.qla.HistoryStack`), carrying the state between chunks.
With decay the prefix is a lower-triangular weighted sum, done in sub-chunks of
`DECAY_BLOCK` positions so that gamma^-t never appears (no overflow for any T).
"""

from __future__ import annotations

import torch
from torch import Tensor

from kernels.qla.common import QLAResult, compute_dtype, normalized_memory, phi

DECAY_BLOCK = 64


def _prefix_states(kv: Tensor, initial_state: Tensor, gamma: Tensor | None) -> Tensor:
    """States after every position: [B, T, H, d, d] from per-position updates kv and M_0."""
    if gamma is None:
        return initial_state[:, None] + kv.cumsum(dim=1)
    t_max = kv.shape[1]
    g = gamma.to(kv.dtype).to(kv.device)
    out = []
    carry = initial_state
    for start in range(0, t_max, DECAY_BLOCK):
        block = kv[:, start : start + DECAY_BLOCK]
        c = block.shape[1]
        pos = torch.arange(c, device=kv.device, dtype=kv.dtype)
        diff = pos[:, None] - pos[None, :]  # t - s
        weights = torch.where(diff >= 0, g[:, None, None] ** diff.clamp(min=0)[None], torch.zeros(()))  # [H, t, s]
        within = torch.einsum("hts,bshde->bthde", weights, block)
        carried = (g[None, :, None] ** (pos[None, None, :] + 1)).permute(0, 2, 1)  # [1, c, H]
        states = within + carried[..., None, None] * carry[:, None]
        out.append(states)
        carry = states[:, -1]
    return torch.cat(out, dim=1)


def scan_qla(
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
    """Same contract as `kernels.qla.qla` (torch backend)."""
    b, t_max, h, d = q.shape
    dt = compute_dtype(q)
    live = torch.arange(t_max, device=q.device)[None, :] < lengths[:, None]  # [B, T]
    kv = (phi(k.to(dt)) * live[..., None, None])[..., :, None] * v.to(dt)[..., None, :]  # [B, T, H, d, d]
    states = _prefix_states(kv, initial_state.to(dt), gamma)
    counts = initial_count.to(dt)[:, None] + live.to(dt).cumsum(dim=1)  # [B, T]
    mem = normalized_memory(states, counts, outer_phi, gamma)
    o = torch.einsum("bthd,bthde->bthe", phi(q.to(dt)), mem)

    last = (lengths - 1).clamp(min=0).long()
    has_any = (lengths > 0)[:, None, None, None]
    if t_max > 0:
        final_state = torch.where(has_any, states[torch.arange(b, device=q.device), last], initial_state.to(dt))
    else:
        final_state = initial_state.to(dt)
    final_count = initial_count.to(dt) + lengths.to(dt)

    states_at = counts_at = None
    if state_positions is not None:
        idx = state_positions.long()
        states_at = torch.gather(states, 1, idx[..., None, None, None].expand(-1, -1, h, d, d))
        counts_at = torch.gather(counts, 1, idx)
    return QLAResult(o=o.to(q.dtype), final_state=final_state, final_count=final_count,
                     states_at=states_at, counts_at=counts_at)
