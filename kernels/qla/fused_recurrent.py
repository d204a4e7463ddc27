"""Fused recurrent QLA in Triton, forward and backward: one program per (batch row, head) walking time.

The d×d state lives in registers (fp32; fp64 for fp64 inputs) for a whole row:
it is loaded once, updated per real position, and written once, so HBM traffic
is the q, k, v reads and the o writes. Both forms (outer phi on: the paper's,
kept for the ablation; off: linear attention) are one kernel with a constexpr.

The backward recomputes prefix states instead of storing them: a forward sweep
keeps one state every `BWD_CHUNK` positions, then each chunk's states are
recomputed into a small scratch buffer and walked backwards. Gradients reach
q, k, v and the initial state (and flow in from o, the final state and the
states at cut points); the count and the decay are data.

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


def interpreted() -> bool:
    """Whether this module's kernels run under Triton's CPU interpreter (fixed when it was imported)."""
    return _INTERPRETED


def supported_head_dim(d: int) -> bool:
    """The kernels keep a d×d state in registers and use tl.arange(0, d): a power of two <= MAX_HEAD_DIM."""
    return 1 <= d <= MAX_HEAD_DIM and not d & (d - 1)


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
    "IS_VARLEN": lambda args: args["cu_seqlens"] is not None,
})
@triton.jit
def fused_recurrent_qla_fwd_kernel(
    q, k, v, o, h0, ht, count0, lengths, cu_seqlens, gamma, norm, pos, slot, hs,
    s_qb, s_qt, s_qh, s_qd,
    s_kb, s_kt, s_kh, s_kd,
    s_vb, s_vt, s_vh, s_vd,
    s_ob, s_ot, s_oh, s_od,
    T, H, C,
    D: tl.constexpr, OUTER_PHI: tl.constexpr, USE_GAMMA: tl.constexpr, SAVE_STATES: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    """Grid (B * H,). Pointers: q/k/v/o [B, T, H, D] strided; h0, ht [B, H, D, D]; count0, lengths [B];
    gamma [H]; norm [B, T, H] (decay only); pos, slot [B, C] sorted positions and their columns;
    hs [B, C, H, D, D] states at those positions. IS_VARLEN (`state_update`): q/k/v/o are packed
    [1, total, H, D], sequence b is cu_seqlens[b] .. cu_seqlens[b+1] (lengths unused), norm is [total, H];
    ht may be h0 itself (in place: each program reads its state before it writes it)."""
    i_bh = tl.program_id(0)
    i_b = (i_bh // H).to(tl.int64)
    i_h = (i_bh % H).to(tl.int64)
    o_d = tl.arange(0, D)

    p_h0 = h0 + (i_b * H + i_h) * D * D + o_d[:, None] * D + o_d[None, :]
    b_h = tl.load(p_h0)
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_b).to(tl.int64)
        length = (tl.load(cu_seqlens + i_b + 1) - bos).to(tl.int32)
        p_q = q + bos * s_qt + i_h * s_qh
        p_k = k + bos * s_kt + i_h * s_kh
        p_v = v + bos * s_vt + i_h * s_vh
        p_o = o + bos * s_ot + i_h * s_oh
    else:
        bos = i_b * T
        length = tl.load(lengths + i_b).to(tl.int32)
        p_q = q + i_b * s_qb + i_h * s_qh
        p_k = k + i_b * s_kb + i_h * s_kh
        p_v = v + i_b * s_vb + i_h * s_vh
        p_o = o + i_b * s_ob + i_h * s_oh
    cnt0 = tl.load(count0 + i_b).to(b_h.dtype)
    if USE_GAMMA:
        b_g = tl.load(gamma + i_h).to(b_h.dtype)
        p_n = norm + bos * H + i_h
    else:
        b_g = cnt0  # unused placeholders
        p_n = count0

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
    if not IS_VARLEN:
        b_zero = tl.zeros([D], dtype=b_h.dtype)
        for t in range(length, T):
            tl.store(p_o + tl.cast(t, tl.int64) * s_ot + o_d * s_od, b_zero.to(p_o.dtype.element_ty))


@triton.jit
def _dsilu(x):
    b_s = 1.0 / (1.0 + tl.exp(-x))
    return b_s * (1.0 + x * (1.0 - b_s))


@triton.heuristics({
    "USE_GAMMA": lambda args: args["gamma"] is not None,
    "USE_DHT": lambda args: args["dht"] is not None,
    "USE_DHS": lambda args: args["dhs"] is not None,
})
@triton.jit
def fused_recurrent_qla_bwd_kernel(
    q, k, v, do, h0, dht, count0, lengths, gamma, norm, pos, slot, dhs, ck, buf,
    dq, dk, dv, dh0,
    s_qb, s_qt, s_qh, s_qd,
    s_kb, s_kt, s_kh, s_kd,
    s_vb, s_vt, s_vh, s_vd,
    T, H, C, NC,
    D: tl.constexpr, BT: tl.constexpr, OUTER_PHI: tl.constexpr,
    USE_GAMMA: tl.constexpr, USE_DHT: tl.constexpr, USE_DHS: tl.constexpr,
):
    """Grid (B * H,). Recomputes the prefix states instead of reading stored ones: a forward sweep writes dq
    and the state at every BT-th position into ck [B*H, NC, D, D]; then, chunk by chunk from the end, the
    chunk's states are recomputed into buf [B*H, BT, D, D] and walked backwards carrying dM (the adjoint of
    M_t). do, dq, dk, dv are contiguous [B, T, H, D]; dht, dh0 [B, H, D, D]; dhs [B, C, H, D, D]."""
    i_bh = tl.program_id(0)
    i_b = (i_bh // H).to(tl.int64)
    i_h = (i_bh % H).to(tl.int64)
    o_d = tl.arange(0, D)
    o_dd = o_d[:, None] * D + o_d[None, :]

    b_h = tl.load(h0 + (i_b * H + i_h) * D * D + o_dd)
    length = tl.load(lengths + i_b).to(tl.int32)
    cnt0 = tl.load(count0 + i_b).to(b_h.dtype)
    if USE_GAMMA:
        b_g = tl.load(gamma + i_h).to(b_h.dtype)
    else:
        b_g = cnt0  # unused placeholder
    p_q = q + i_b * s_qb + i_h * s_qh
    p_k = k + i_b * s_kb + i_h * s_kh
    p_v = v + i_b * s_vb + i_h * s_vh
    s_t = H * D  # do, dq, dk, dv: contiguous
    p_row = (i_b * T * H + i_h) * D
    p_ck = ck + i_bh.to(tl.int64) * NC * D * D
    p_buf = buf + i_bh.to(tl.int64) * BT * D * D

    # forward sweep: checkpoints and dq_t = phi'(q_t) * (mem_t @ do_t)
    for t in range(0, length):
        i_t = tl.cast(t, tl.int64)
        if t % BT == 0:
            tl.store(p_ck + (t // BT) * D * D + o_dd, b_h)
        b_qr = tl.load(p_q + i_t * s_qt + o_d * s_qd).to(b_h.dtype)
        b_k = _silu(tl.load(p_k + i_t * s_kt + o_d * s_kd).to(b_h.dtype))
        b_v = tl.load(p_v + i_t * s_vt + o_d * s_vd).to(b_h.dtype)
        if USE_GAMMA:
            b_h = b_h * b_g
            b_n = tl.load(norm + (i_b * T + i_t) * H + i_h).to(b_h.dtype)
        else:
            b_n = cnt0 + tl.cast(t + 1, b_h.dtype)
        b_h += b_k[:, None] * b_v[None, :]
        b_m = b_h / b_n
        if OUTER_PHI:
            b_m = _silu(b_m)
        b_do = tl.load(do + p_row + i_t * s_t + o_d).to(b_h.dtype)
        b_dq = _dsilu(b_qr) * tl.sum(b_m * b_do[None, :], axis=1)
        tl.store(dq + p_row + i_t * s_t + o_d, b_dq.to(dq.dtype.element_ty))

    # backward sweep, chunk by chunk from the last
    if USE_DHT:
        b_dh = tl.load(dht + (i_b * H + i_h) * D * D + o_dd).to(b_h.dtype)
    else:
        b_dh = tl.zeros([D, D], dtype=b_h.dtype)
    i_cut = C - 1
    n_chunks = (length + BT - 1) // BT
    for jc in range(0, n_chunks):
        i_c = n_chunks - 1 - jc
        t_lo = i_c * BT
        t_hi = tl.minimum(t_lo + BT, length)
        b_h = tl.load(p_ck + i_c * D * D + o_dd)
        for t in range(t_lo, t_hi):
            i_t = tl.cast(t, tl.int64)
            b_k = _silu(tl.load(p_k + i_t * s_kt + o_d * s_kd).to(b_h.dtype))
            b_v = tl.load(p_v + i_t * s_vt + o_d * s_vd).to(b_h.dtype)
            if USE_GAMMA:
                b_h = b_h * b_g
            b_h += b_k[:, None] * b_v[None, :]
            tl.store(p_buf + (t - t_lo) * D * D + o_dd, b_h)
        tl.debug_barrier()
        for jt in range(0, t_hi - t_lo):
            t = t_hi - 1 - jt
            i_t = tl.cast(t, tl.int64)
            b_h = tl.load(p_buf + (t - t_lo) * D * D + o_dd)
            if USE_DHS:
                # cut points at t (sorted, duplicates allowed): their states' gradients join the adjoint
                p_at = tl.load(pos + i_b * C + tl.maximum(i_cut, 0)).to(tl.int32)
                while (i_cut >= 0) & (p_at == t):
                    i_s = tl.load(slot + i_b * C + i_cut)
                    b_dh += tl.load(dhs + ((i_b * C + i_s) * H + i_h) * D * D + o_dd).to(b_h.dtype)
                    i_cut -= 1
                    p_at = tl.load(pos + i_b * C + tl.maximum(i_cut, 0)).to(tl.int32)
            b_q = _silu(tl.load(p_q + i_t * s_qt + o_d * s_qd).to(b_h.dtype))
            b_kr = tl.load(p_k + i_t * s_kt + o_d * s_kd).to(b_h.dtype)
            b_k = _silu(b_kr)
            b_v = tl.load(p_v + i_t * s_vt + o_d * s_vd).to(b_h.dtype)
            b_do = tl.load(do + p_row + i_t * s_t + o_d).to(b_h.dtype)
            if USE_GAMMA:
                b_n = tl.load(norm + (i_b * T + i_t) * H + i_h).to(b_h.dtype)
            else:
                b_n = cnt0 + tl.cast(t + 1, b_h.dtype)
            b_local = b_q[:, None] * b_do[None, :] / b_n
            if OUTER_PHI:
                b_local = b_local * _dsilu(b_h / b_n)
            b_dh += b_local
            b_dk = _dsilu(b_kr) * tl.sum(b_dh * b_v[None, :], axis=1)
            b_dv = tl.sum(b_dh * b_k[:, None], axis=0)
            tl.store(dk + p_row + i_t * s_t + o_d, b_dk.to(dk.dtype.element_ty))
            tl.store(dv + p_row + i_t * s_t + o_d, b_dv.to(dv.dtype.element_ty))
            if USE_GAMMA:
                b_dh = b_dh * b_g
        tl.debug_barrier()
    tl.store(dh0 + (i_b * H + i_h) * D * D + o_dd, b_dh.to(dh0.dtype.element_ty))


def _check_supported(inputs: QLAInputs) -> None:
    """Refuse what this kernel cannot do, with the reason and the way out."""
    q = inputs.q
    d = q.shape[-1]
    if not supported_head_dim(d):
        raise ValueError(f"the Triton QLA kernel needs a head width d that is a power of two <= {MAX_HEAD_DIM}; "
                         f"got d = {d} (use Backend.TORCH)")
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (inputs.initial_count,
                                                                                    inputs.gamma)):
        raise ValueError("the Triton QLA kernel differentiates q, k, v and the initial state only; the count and "
                         "the decay gamma are data here (use Backend.TORCH to learn them)")
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


BWD_CHUNK = 32  # states recomputed per backward chunk: scratch B*H*(T/BWD_CHUNK + BWD_CHUNK)*d*d


def _num_warps(d: int) -> int:
    return max(1, min(4, d * d // 1024))


def fused_recurrent_qla_fwd(
    q: Tensor, k: Tensor, v: Tensor, h0: Tensor, count0: Tensor, lengths32: Tensor, gamma: Tensor | None,
    norm: Tensor | None, pos: Tensor | None, slot: Tensor | None, outer_phi: bool,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Launch the forward: (o [B, T, H, d] in q's dtype, final state, states at the sorted cuts pos/slot)."""
    b, t_max, h, d = q.shape
    o = torch.empty(b, t_max, h, d, device=q.device, dtype=q.dtype)
    ht = torch.empty_like(h0)
    states_at = None if pos is None else torch.empty(b, pos.shape[1], h, d, d, device=q.device, dtype=h0.dtype)
    if b * h == 0 or t_max == 0:
        ht.copy_(h0)
        return o, ht, states_at
    fused_recurrent_qla_fwd_kernel[(b * h,)](
        q, k, v, o, h0, ht, count0, lengths32, None, gamma, norm, pos, slot, states_at,
        *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        t_max, h, 0 if pos is None else pos.shape[1],
        D=d, OUTER_PHI=outer_phi, num_warps=_num_warps(d),
    )
    return o, ht, states_at


def fused_recurrent_qla_bwd(
    q: Tensor, k: Tensor, v: Tensor, do: Tensor, h0: Tensor, dht: Tensor | None, count0: Tensor,
    lengths32: Tensor, gamma: Tensor | None, norm: Tensor | None, pos: Tensor | None, slot: Tensor | None,
    dhs: Tensor | None, outer_phi: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Launch the backward: (dq, dk, dv in q's dtype, zero at padded positions; dh0 in the state's dtype)."""
    b, t_max, h, d = q.shape
    dt = h0.dtype
    # fp32 accumulation targets, zero where padded (the kernel writes real positions only)
    dq, dk, dv = (torch.zeros(b, t_max, h, d, device=q.device, dtype=dt) for _ in range(3))
    dh0 = torch.empty_like(h0)
    if b * h == 0 or t_max == 0:
        dh0.copy_(dht if dht is not None else torch.zeros_like(h0))
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dh0
    bt = min(BWD_CHUNK, triton.next_power_of_2(t_max))
    n_chunks = triton.cdiv(t_max, bt)
    ck = torch.empty(b * h, n_chunks, d, d, device=q.device, dtype=dt)
    buf = torch.empty(b * h, bt, d, d, device=q.device, dtype=dt)
    fused_recurrent_qla_bwd_kernel[(b * h,)](
        q, k, v, do.contiguous(), h0, None if dht is None else dht.contiguous(), count0, lengths32, gamma, norm,
        pos, slot, None if dhs is None else dhs.contiguous(), ck, buf, dq, dk, dv, dh0,
        *q.stride(), *k.stride(), *v.stride(),
        t_max, h, 0 if pos is None else pos.shape[1], n_chunks,
        D=d, BT=bt, OUTER_PHI=outer_phi, num_warps=_num_warps(d),
    )
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dh0


class FusedRecurrentQLAFunction(torch.autograd.Function):
    """Gradients for q, k, v and the initial state; the count, lengths, decay and cut positions are data."""

    @staticmethod
    def forward(ctx, q, k, v, h0, count0, lengths32, gamma, norm, pos, slot, outer_phi):  # noqa: ANN001, ANN205
        o, ht, states_at = fused_recurrent_qla_fwd(q, k, v, h0, count0, lengths32, gamma, norm, pos, slot,
                                                   outer_phi)
        ctx.save_for_backward(q, k, v, h0, count0, lengths32, gamma, norm, pos, slot)
        ctx.outer_phi = outer_phi
        ctx.set_materialize_grads(False)
        return o, ht, states_at

    @staticmethod
    def backward(ctx, do, dht, dhs):  # noqa: ANN001, ANN205
        q, k, v, h0, count0, lengths32, gamma, norm, pos, slot = ctx.saved_tensors
        if do is None:
            do = torch.zeros_like(q)
        dq, dk, dv, dh0 = fused_recurrent_qla_bwd(q, k, v, do, h0, dht, count0, lengths32, gamma, norm, pos, slot,
                                                  dhs, ctx.outer_phi)
        return dq, dk, dv, dh0, None, None, None, None, None, None, None


def fused_recurrent_qla(inputs: QLAInputs) -> tuple[Tensor, QLAState]:
    """Backend.TRITON: (o, final state) of `kernels.qla.qla`, differentiable in q, k, v and the initial state
    (the backward recomputes prefix states: no [B, T, H, d, d] is stored); any strides; o is 0 where padded."""
    _check_supported(inputs)
    q, k, v = inputs.q, inputs.k, inputs.v
    lengths, state_positions = inputs.lengths, inputs.state_positions
    b, t_max, h, d = q.shape
    dev, dt = q.device, inputs.dtype
    _check_ranges(lengths, state_positions, t_max)

    count0 = inputs.initial_count.contiguous()
    final_count = count0 + lengths.to(dt)
    norm = g = None
    if inputs.gamma is not None:
        g = inputs.gamma.contiguous()
        live = torch.arange(t_max, device=dev)[None, :] < lengths[:, None]
        norm = normalizer(count0[:, None] + live.to(dt).cumsum(dim=1), g, h, dt).contiguous()  # [B, T, H]
    pos = slot = counts_at = None
    if state_positions is not None:
        pos, slot = state_positions.sort(dim=1)
        pos, slot = pos.contiguous(), slot.contiguous()
        counts_at = count0[:, None] + (state_positions + 1).to(dt)
    o, final_state, states_at = FusedRecurrentQLAFunction.apply(
        q, k, v, inputs.initial_state.contiguous(), count0, lengths.to(torch.int32).contiguous(), g, norm, pos,
        slot, inputs.outer_phi)
    return o, QLAState(final_state, final_count, states_at, counts_at)
