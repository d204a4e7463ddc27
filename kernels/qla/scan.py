"""Parallel QLA in plain torch.

outer_phi=True needs phi(M_t / n_t) at every position, so the prefix states are materialized by
cumulative sum: memory O(B·T·H·d²) per call, and callers process long histories in time chunks
(see `models.qla.HistoryStack`), carrying the state between chunks. With decay the prefix is a
lower-triangular weighted sum, done in sub-chunks of `DECAY_BLOCK` positions so that gamma^-t never
appears (no overflow for any T).

outer_phi=False is linear in M, so o_t = (phi(q_t)·M_0·gamma^(t+1) + sum_{s<=t} gamma^(t-s)
(phi(q_t)·phi(k_s)) v_s) / n_t is computed in the chunked attention form (blocks of `LINEAR_BLOCK`
positions, the state carried between blocks) and states are formed only where asked: the final
state and the cut points. Measured on one CPU thread it is several times cheaper than the
materialized form, which spends most of its time in the cumulative sum over [B, T, H, d, d].
"""

from __future__ import annotations

import torch
from torch import Tensor

from kernels.qla.utils import QLAInputs, QLAState, gather_at, normalized_memory, normalizer, phi

DECAY_BLOCK = 64
LINEAR_BLOCK = 128


def _powers(gamma: Tensor, exponents: Tensor) -> Tensor:
    """gamma_h ** e for non-negative integer exponents [...] -> [..., H] (no negative powers: no overflow)."""
    return gamma ** exponents.clamp(min=0).to(gamma.dtype)[..., None]


def _causal_weights(diff: Tensor, gamma: Tensor | None, dtype: torch.dtype) -> Tensor:
    """Weight of event s in the state after position t, for diff = t - s [...]: gamma_h^diff where diff >= 0,
    else 0 -> [..., H] ([..., 1] without decay, broadcasting over heads)."""
    if gamma is None:
        return (diff >= 0).to(dtype)[..., None]
    return torch.where(diff[..., None] >= 0, _powers(gamma, diff), torch.zeros((), dtype=dtype, device=diff.device))


def _prefix_states(kv: Tensor, initial_state: Tensor, gamma: Tensor | None) -> Tensor:
    """States after every position: [B, T, H, d, d] from per-position updates kv, M_0 and gamma (kv's dtype)."""
    if gamma is None:
        return initial_state[:, None] + kv.cumsum(dim=1)
    t_max = kv.shape[1]
    out = []
    carry = initial_state
    for start in range(0, t_max, DECAY_BLOCK):
        block = kv[:, start : start + DECAY_BLOCK]
        c = block.shape[1]
        pos = torch.arange(c, device=kv.device, dtype=kv.dtype)
        weights = _causal_weights(pos[:, None] - pos[None, :], gamma, kv.dtype).permute(2, 0, 1)  # [H, t, s]
        within = torch.einsum("hts,bshde->bthde", weights, block)
        carried = (gamma[None, :, None] ** (pos[None, None, :] + 1)).permute(0, 2, 1)  # [1, c, H]
        states = within + carried[..., None, None] * carry[:, None]
        out.append(states)
        carry = states[:, -1]
    return torch.cat(out, dim=1)


def scan_qla(inputs: QLAInputs) -> tuple[Tensor, QLAState]:
    """Backend.TORCH: (o, final state) of `kernels.qla.qla` in parallel, differentiable."""
    q, lengths, gamma = inputs.q, inputs.lengths, inputs.gamma
    b, t_max = q.shape[:2]
    dt = inputs.dtype
    live = torch.arange(t_max, device=q.device)[None, :] < lengths[:, None]  # [B, T]
    counts = inputs.initial_count[:, None] + live.to(dt).cumsum(dim=1)  # [B, T]
    if not inputs.outer_phi:
        return _linear_scan(inputs, live, counts)
    fk = phi(inputs.k.to(dt)) * live[..., None, None]
    kv = fk[..., :, None] * inputs.v.to(dt)[..., None, :]  # [B, T, H, d, d]
    states = _prefix_states(kv, inputs.initial_state, gamma)
    mem = normalized_memory(states, counts, inputs.outer_phi, gamma)
    o = torch.einsum("bthd,bthde->bthe", phi(q.to(dt)), mem)

    last = (lengths - 1).clamp(min=0).long()
    has_any = (lengths > 0)[:, None, None, None]
    if t_max > 0:
        final_state = torch.where(has_any, states[torch.arange(b, device=q.device), last], inputs.initial_state)
    else:
        final_state = inputs.initial_state
    final_count = inputs.initial_count + lengths.to(dt)

    states_at = counts_at = None
    if inputs.state_positions is not None:
        states_at, counts_at = gather_at(states, counts, inputs.state_positions)
    return o.to(q.dtype), QLAState(final_state, final_count, states_at, counts_at)


def _states_at(fk: Tensor, v: Tensor, initial_state: Tensor, positions: Tensor, gamma: Tensor | None) -> Tensor:
    """M after each position p [B, C]: gamma^(p+1) M_0 + sum_{s<=p} gamma^(p-s) phi(k_s)^T v_s -> [B, C, H, d, d].

    fk, v are head-major [B, H, T, d] with phi(k) already zero at padded positions.
    """
    t_max = fk.shape[2]
    diff = positions[:, :, None] - torch.arange(t_max, device=fk.device)[None, None, :]  # [B, C, T] = p - s
    weights = _causal_weights(diff, gamma, fk.dtype).permute(0, 3, 1, 2)  # [B, H or 1, C, T]
    start = initial_state[:, None]
    if gamma is not None:
        start = _powers(gamma, positions + 1)[..., None, None] * start
    per_cut = torch.einsum("bhct,bhtd,bhte->bchde", weights.expand(-1, fk.shape[1], -1, -1), fk, v)
    return start + per_cut


def _linear_scan(inputs: QLAInputs, live: Tensor, counts: Tensor) -> tuple[Tensor, QLAState]:
    """outer_phi=False in the chunked attention form (see the module doc); live, counts [B, T] from `scan_qla`."""
    q, lengths, g = inputs.q, inputs.lengths, inputs.gamma
    t_max, h = q.shape[1], q.shape[2]
    dt = inputs.dtype
    fq = phi(q.to(dt)).transpose(1, 2)  # [B, H, T, d]
    fk = (phi(inputs.k.to(dt)) * live[..., None, None]).transpose(1, 2)
    vv = inputs.v.to(dt).transpose(1, 2)
    carry = inputs.initial_state
    outs = []
    full = min(LINEAR_BLOCK, t_max)
    pos_full = torch.arange(full, device=q.device)
    # the decay weights of a block depend only on positions inside it: computed once per call, sliced for a
    # shorter last block (recomputing gamma^(t-s) per block was 40% of a long user's update time, measured)
    mask_full = _causal_weights(pos_full[:, None] - pos_full[None, :], g, dt).permute(2, 0, 1)  # [H or 1, c, c]
    if g is not None:
        table = _powers(g, torch.arange(full + 1, device=q.device))  # [c + 1, H]: gamma^e
    for start in range(0, t_max, LINEAR_BLOCK):
        qb, kb, vb = (z[:, :, start : start + LINEAR_BLOCK] for z in (fq, fk, vv))
        c = qb.shape[2]
        pos, mask = pos_full[:c], mask_full[:, :c, :c]
        inter = qb @ carry  # [B, H, c, d]
        if g is not None:
            inter = table[1 : c + 1].T[None, :, :, None] * inter
        outs.append(inter + ((qb @ kb.transpose(-1, -2)) * mask) @ vb)
        # carry each row to its last real position in this block (padding neither adds nor decays)
        n_b = (lengths - start).clamp(0, c)  # [B]
        if g is None:
            carry = carry + kb.transpose(-1, -2) @ vb
        else:
            w = table[(n_b[:, None] - 1 - pos[None, :]).clamp(min=0)].permute(0, 2, 1)  # [B, H, c]
            carry = table[n_b][..., None, None] * carry + (kb * w[..., None]).transpose(-1, -2) @ vb
    n = normalizer(counts, g, h, dt)  # [B, T, H]
    if t_max > 0:
        o = torch.cat(outs, dim=2).transpose(1, 2) / n[..., None]
    else:
        o = q.new_zeros(q.shape, dtype=dt)
    states_at = counts_at = None
    if inputs.state_positions is not None:
        idx = inputs.state_positions
        states_at = _states_at(fk, vv, inputs.initial_state, idx, g)
        counts_at = torch.gather(counts, 1, idx)
    return o.to(q.dtype), QLAState(carry, inputs.initial_count + lengths.to(dt), states_at, counts_at)
