"""Fused recurrent QLA forward in Triton: one program per (batch row, head) walking time.

The d×d state lives in registers (fp32; fp64 for fp64 inputs) for a whole row:
it is loaded once, updated per real position, and written once, so HBM traffic
is the q, k, v reads and the o writes. Forward only: `VistaModel.update`
(stream worker, backfill) runs under `torch.no_grad`; training uses
`Backend.TORCH`, and inputs that need gradients are refused, never silently
rerouted.

Runs natively on CUDA; on CPU only under Triton's interpreter, which is chosen
when `TRITON_INTERPRET=1` is set before this module is imported (the
`@triton.jit` decorator reads it then). The device is never queried at import.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from kernels.qla.utils import QLAInputs, QLAState, normalizer

MAX_HEAD_DIM = 64

# the interpreter is picked per kernel when it is decorated, i.e. at this module's import
_INTERPRETED = bool(triton.knobs.runtime.interpret)


@triton.jit
def _silu(x):
    return x / (1.0 + tl.exp(-x))


@triton.jit
def _qla_steps(
    b_h, t_start, t_end, cnt0, b_g,
    p_q, p_k, p_v, p_o, p_n,
    s_qt, s_kt, s_vt, s_ot, s_nt, s_qd, s_kd, s_vd, s_od,
    o_d, D: tl.constexpr, OUTER_PHI: tl.constexpr, USE_GAMMA: tl.constexpr,
):
    """Advance the register state b_h [D, D] over real positions t_start..t_end-1, writing o_t."""
    for t in range(t_start, t_end):
        i_t = tl.cast(t, tl.int64)
        b_q = _silu(tl.load(p_q + i_t * s_qt + o_d * s_qd).to(b_h.dtype))
        b_k = _silu(tl.load(p_k + i_t * s_kt + o_d * s_kd).to(b_h.dtype))
        b_v = tl.load(p_v + i_t * s_vt + o_d * s_vd).to(b_h.dtype)
        if USE_GAMMA:
            b_h = b_h * b_g
            # the normalizer comes precomputed by utils.normalizer, the references' own formula
            b_n = tl.load(p_n + i_t * s_nt).to(b_h.dtype)
        else:
            b_n = cnt0 + tl.cast(t + 1, b_h.dtype)
        b_h += b_k[:, None] * b_v[None, :]
        b_m = b_h / b_n
        if OUTER_PHI:
            b_m = _silu(b_m)
        b_o = tl.sum(b_q[:, None] * b_m, axis=0)
        tl.store(p_o + i_t * s_ot + o_d * s_od, b_o.to(p_o.dtype.element_ty))
    return b_h


@triton.heuristics({
    "USE_GAMMA": lambda args: args["gamma"] is not None,
    "SAVE_STATES": lambda args: args["pos"] is not None,
})
@triton.jit
def fused_recurrent_qla_fwd_kernel(
    q, k, v, o, h0, ht, count0, lengths, gamma, norm, pos, slot, hs,
    s_qb, s_qt, s_qh, s_qd,
    s_kb, s_kt, s_kh, s_kd,
    s_vb, s_vt, s_vh, s_vd,
    s_ob, s_ot, s_oh, s_od,
    T, H, C,
    D: tl.constexpr, OUTER_PHI: tl.constexpr, USE_GAMMA: tl.constexpr, SAVE_STATES: tl.constexpr,
):
    """Grid (B * H,). Pointers: q/k/v/o [B, T, H, D] strided; h0, ht [B, H, D, D]; count0, lengths [B];
    gamma [H]; norm [B, T, H] (decay only); pos, slot [B, C] sorted positions and their columns;
    hs [B, C, H, D, D] states at those positions."""
    i_bh = tl.program_id(0)
    i_b = (i_bh // H).to(tl.int64)
    i_h = (i_bh % H).to(tl.int64)
    o_d = tl.arange(0, D)

    p_h0 = h0 + (i_b * H + i_h) * D * D + o_d[:, None] * D + o_d[None, :]
    b_h = tl.load(p_h0)
    length = tl.load(lengths + i_b).to(tl.int32)
    cnt0 = tl.load(count0 + i_b).to(b_h.dtype)
    if USE_GAMMA:
        b_g = tl.load(gamma + i_h).to(b_h.dtype)
        p_n = norm + i_b * T * H + i_h
    else:
        b_g = cnt0  # unused placeholders
        p_n = count0
    p_q = q + i_b * s_qb + i_h * s_qh
    p_k = k + i_b * s_kb + i_h * s_kh
    p_v = v + i_b * s_vb + i_h * s_vh
    p_o = o + i_b * s_ob + i_h * s_oh

    t0 = length * 0
    if SAVE_STATES:
        for c in range(C):
            t_pos = tl.load(pos + i_b * C + c).to(tl.int32)
            i_c = tl.load(slot + i_b * C + c)
            t_end = tl.minimum(t_pos + 1, length)
            b_h = _qla_steps(b_h, t0, t_end, cnt0, b_g, p_q, p_k, p_v, p_o, p_n,
                             s_qt, s_kt, s_vt, s_ot, H, s_qd, s_kd, s_vd, s_od,
                             o_d, D, OUTER_PHI, USE_GAMMA)
            t0 = tl.maximum(t0, t_end)
            p_hs = hs + ((i_b * C + i_c) * H + i_h) * D * D + o_d[:, None] * D + o_d[None, :]
            tl.store(p_hs, b_h.to(p_hs.dtype.element_ty))
    b_h = _qla_steps(b_h, t0, length, cnt0, b_g, p_q, p_k, p_v, p_o, p_n,
                     s_qt, s_kt, s_vt, s_ot, H, s_qd, s_kd, s_vd, s_od,
                     o_d, D, OUTER_PHI, USE_GAMMA)
    p_ht = ht + (i_b * H + i_h) * D * D + o_d[:, None] * D + o_d[None, :]
    tl.store(p_ht, b_h.to(p_ht.dtype.element_ty))

    # padded positions: outputs are unspecified by contract; write zeros rather than leave garbage
    b_zero = tl.zeros([D], dtype=b_h.dtype)
    for t in range(length, T):
        tl.store(p_o + tl.cast(t, tl.int64) * s_ot + o_d * s_od, b_zero.to(p_o.dtype.element_ty))


def _check_supported(inputs: QLAInputs) -> None:
    """Refuse what this forward-only kernel cannot do, with the reason and the way out."""
    q = inputs.q
    d = q.shape[-1]
    if d < 1 or d > MAX_HEAD_DIM or d & (d - 1):
        raise ValueError(f"the Triton QLA kernel needs a head width d that is a power of two <= {MAX_HEAD_DIM}; "
                         f"got d = {d} (use Backend.TORCH)")
    needs_grad = (q, inputs.k, inputs.v, inputs.initial_state, inputs.initial_count, inputs.gamma)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in needs_grad):
        raise RuntimeError("the Triton QLA kernel is forward-only and its inputs require grad: use Backend.TORCH "
                           "for training (or call under torch.no_grad() if no gradients are wanted)")
    if q.device.type != "cuda" and not _INTERPRETED:
        raise RuntimeError(f"the Triton QLA kernel runs on CUDA; got tensors on {q.device}. On CPU set "
                           "TRITON_INTERPRET=1 before kernels.qla.fused_recurrent is imported (slow; for tests), "
                           "or use Backend.TORCH")


def _check_ranges(lengths: Tensor, state_positions: Tensor | None, t_max: int) -> None:
    """0 <= lengths <= T and 0 <= state_positions < length (one host sync): the kernel reads memory by them."""
    bad = (lengths < 0) | (lengths > t_max)
    if state_positions is not None:
        bad_pos = ((state_positions < 0) | (state_positions >= lengths[:, None])).any(dim=1)
        if bool((bad | bad_pos).any()):
            if bool(bad_pos.any()) and not bool(bad.any()):
                raise ValueError("every state_positions entry must satisfy 0 <= position < its row's length")
            raise ValueError(f"lengths must lie in [0, T = {t_max}]")
    elif bool(bad.any()):
        raise ValueError(f"lengths must lie in [0, T = {t_max}]")


def fused_recurrent_qla(inputs: QLAInputs) -> tuple[Tensor, QLAState]:
    """Backend.TRITON: (o, final state) of `kernels.qla.qla`, forward only; any strides; o is 0 where padded."""
    _check_supported(inputs)
    q, k, v = inputs.q, inputs.k, inputs.v
    lengths, state_positions = inputs.lengths, inputs.state_positions
    b, t_max, h, d = q.shape
    dev, dt = q.device, inputs.dtype
    _check_ranges(lengths, state_positions, t_max)

    h0 = inputs.initial_state.contiguous()
    count0 = inputs.initial_count.contiguous()
    o = torch.empty(b, t_max, h, d, device=dev, dtype=q.dtype)
    final_state = torch.empty(b, h, d, d, device=dev, dtype=dt)
    final_count = count0 + lengths.to(dt)

    norm = g = None
    if inputs.gamma is not None:
        g = inputs.gamma.contiguous()
        live = torch.arange(t_max, device=dev)[None, :] < lengths[:, None]
        norm = normalizer(count0[:, None] + live.to(dt).cumsum(dim=1), g, h, dt).contiguous()  # [B, T, H]

    pos = slot = states_at = counts_at = None
    n_cuts = 0
    if state_positions is not None:
        n_cuts = state_positions.shape[1]
        pos, slot = state_positions.sort(dim=1)
        pos, slot = pos.contiguous(), slot.contiguous()
        states_at = torch.empty(b, n_cuts, h, d, d, device=dev, dtype=dt)
        counts_at = count0[:, None] + (state_positions + 1).to(dt)

    if b * h == 0 or (t_max == 0 and n_cuts == 0):
        final_state.copy_(h0)
        return o, QLAState(final_state, final_count, states_at, counts_at)

    lengths32 = lengths.to(torch.int32).contiguous()
    fused_recurrent_qla_fwd_kernel[(b * h,)](
        q, k, v, o, h0, final_state, count0, lengths32, g, norm, pos, slot, states_at,
        *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        t_max, h, n_cuts,
        D=d, OUTER_PHI=inputs.outer_phi,
        num_warps=max(1, min(4, d * d // 1024)),
    )
    return o, QLAState(final_state, final_count, states_at, counts_at)
