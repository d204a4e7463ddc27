"""The streaming update in Triton: many users, a few new events each, packed, continue their stored states.

    o, new = state_update(q, k, v, initial_state=M, initial_count=N, cu_seqlens=cu)   # out of place
    o, new = state_update(q, k, v, initial_state=M, initial_count=N, cu_seqlens=cu, in_place=True)

q, k, v are packed [1, total, H, d]: user i's events are rows cu_seqlens[i] .. cu_seqlens[i+1] (a user
with no new events has an empty range and keeps its state). M [N, H, d, d] is fp32 (fp64 for fp64 inputs)
and N [N] the event counts. Returns o [1, total, H, d] (what the next layer needs: its input is
h + W_o(norm(o) ⊙ phi(u)) at every new event) and the `QLAState` after each user's last event. No padding
is read or written, so a batch of short users costs what its events cost, not its longest user.

It is the fused recurrent forward kernel in its varlen form: one program per (user, head), the state in
registers, read once and written once. In place, the new state overwrites `initial_state` and the count is
added to `initial_count` (a worker that owns its batch saves the copy). Forward only: the stream runs
without gradients; training uses `qla` (fused recurrent or chunked, with backward).
"""

from __future__ import annotations

import torch
from torch import Tensor

from kernels.qla import fused_recurrent as fr
from kernels.qla.utils import QLAState, normalizer


def check_packed(q: Tensor, k: Tensor, v: Tensor, initial_state: Tensor, initial_count: Tensor,
                 cu_seqlens: Tensor) -> Tensor:
    """Shape and range checks of a packed batch (one host sync); returns the lengths [N]."""
    if q.dim() != 4 or q.shape[0] != 1 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"q, k, v must all be packed [1, total, H, d]; got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    _, total, h, d = q.shape
    if cu_seqlens.dim() != 1 or cu_seqlens.dtype.is_floating_point or cu_seqlens.numel() < 1:
        raise ValueError("cu_seqlens must be a 1-D integer tensor [N + 1]")
    n = cu_seqlens.numel() - 1
    if tuple(initial_state.shape) != (n, h, d, d):
        raise ValueError(f"initial_state must be [N, H, d, d] = {(n, h, d, d)}; got {tuple(initial_state.shape)}")
    if tuple(initial_count.shape) != (n,):
        raise ValueError(f"initial_count must be [N] = [{n}]; got {tuple(initial_count.shape)}")
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    if n and bool((cu_seqlens[0] != 0) | (cu_seqlens[-1] != total) | (lengths < 0).any()):
        raise ValueError(f"cu_seqlens must rise from 0 to total = {total}")
    return lengths


def state_update(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    initial_state: Tensor,
    initial_count: Tensor,
    cu_seqlens: Tensor,
    outer_phi: bool = False,
    gamma: Tensor | None = None,
    in_place: bool = False,
) -> tuple[Tensor, QLAState]:
    """(o [1, total, H, d] in q's dtype, state after each user's events); see the module doc."""
    lengths = check_packed(q, k, v, initial_state, initial_count, cu_seqlens)
    _, total, h, d = q.shape
    if not fr.supported_head_dim(d):
        raise ValueError(f"state_update needs a head width that is a power of two <= {fr.MAX_HEAD_DIM}; got {d}")
    if q.device.type != "cuda" and not fr.interpreted():
        raise RuntimeError(f"state_update runs on CUDA; got tensors on {q.device} (on a CPU set TRITON_INTERPRET=1 "
                           "before kernels.qla.fused_recurrent is imported, or use Backend.TORCH)")
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, initial_state)):
        raise RuntimeError("state_update is forward only (the stream needs no gradients): call it under "
                           "torch.no_grad(), or train through kernels.qla.qla")
    dt = torch.float64 if q.dtype == torch.float64 else torch.float32
    if initial_state.dtype != dt:
        raise ValueError(f"initial_state must be {dt} for {q.dtype} inputs; got {initial_state.dtype}")
    n = lengths.numel()
    h0 = initial_state if in_place else initial_state.contiguous()
    if in_place and not h0.is_contiguous():
        raise ValueError("in_place needs a contiguous initial_state")
    count0 = initial_count.to(dt).contiguous()
    norm = g = None
    if gamma is not None:
        g = gamma.to(device=q.device, dtype=dt).contiguous()
        user = torch.repeat_interleave(torch.arange(n, device=q.device), lengths, output_size=total)
        step = torch.arange(total, device=q.device) - cu_seqlens[:-1].long()[user]
        norm = normalizer(count0[user] + step.to(dt) + 1, g, h, dt).contiguous()  # [total, H]
    o = torch.empty_like(q, memory_format=torch.contiguous_format)
    ht = h0 if in_place else torch.empty_like(h0)
    if n * h and total:
        fr.fused_recurrent_qla_fwd_kernel[(n * h,)](
            q, k, v, o, h0, ht, count0, None, cu_seqlens.contiguous(), g, norm, None, None, None,
            *q.stride(), *k.stride(), *v.stride(), *o.stride(),
            total, h, 0,
            D=d, OUTER_PHI=outer_phi, num_warps=fr._num_warps(d),
        )
    elif not in_place:
        ht.copy_(h0)
    if in_place:
        count = initial_count.add_(lengths.to(initial_count.dtype))
    else:
        count = initial_count + lengths.to(initial_count.dtype)
    return o, QLAState(ht, count)
