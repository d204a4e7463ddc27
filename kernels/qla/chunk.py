"""Chunked linear QLA (outer_phi=False) in Triton, forward and backward, on tensor cores.

    o, final = chunk_linear_qla(q, k, v, initial_state=M0, initial_count=N0, output_final_state=True,
                                cu_seqlens=cu)

o_t = phi(q_t) · M_t / n_t with M_t = M_0 + sum_{s<=t} phi(k_s)^T v_s and n_t = N_0 + t + 1 (no decay: with
decay use `fused_recurrent`). phi and 1/n are elementwise torch (autograd differentiates them); the kernels
do plain causal linear attention from an initial state, one program per (sequence, head) walking chunks of
BT positions with the d×d state in registers: inside a chunk (q k^T ⊙ causal) v and q·S are `tl.dot`s on
[BT, d] blocks. The backward recomputes rather than stores: dq in a forward sweep (the states before each
chunk, rebuilt on the way), dk, dv in a reverse sweep carrying dS.

Layout: q, k, v [B, T, H, d] (or packed [1, total, H, d] with cu_seqlens [N + 1]); states [N, H, d, d] fp32.
Half inputs stay half in the dots (fp32 accumulation); the state and the unnormalized output are fp32.
fp32 inputs use exact fp32 dots (no TF32), so the fp32 tolerance of the recurrent form holds.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from kernels.qla import fused_recurrent as fr
from kernels.qla.utils import QLAInputs, QLAState, phi

CHUNK = 32
MIN_HEAD_DIM = 16  # tl.dot needs every block dimension >= 16


@triton.jit
def _dot(a, b, IEEE: tl.constexpr):
    if IEEE:
        return tl.dot(a, b, input_precision="ieee")
    return tl.dot(a, b)


@triton.jit
def _bounds(cu_seqlens, i_n, T, IS_VARLEN: tl.constexpr):
    """(first row, length) of sequence i_n in a [B*T] (or packed [total]) row space."""
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
        return bos, (eos - bos).to(tl.int32)
    return i_n.to(tl.int64) * T, T


@triton.heuristics({
    "USE_H0": lambda args: args["h0"] is not None,
    "STORE_HT": lambda args: args["ht"] is not None,
    "IS_VARLEN": lambda args: args["cu_seqlens"] is not None,
})
@triton.jit
def chunk_linear_fwd_kernel(
    q, k, v, o, h0, ht, cu_seqlens, T, H,
    D: tl.constexpr, BT: tl.constexpr, IEEE: tl.constexpr,
    USE_H0: tl.constexpr, STORE_HT: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    """Grid (N * H,). q, k, v [rows, H, D] contiguous in q's dtype; o [rows, H, D] fp32; h0, ht [N, H, D, D]."""
    i_nh = tl.program_id(0)
    i_n, i_h = i_nh // H, i_nh % H
    bos, length = _bounds(cu_seqlens, i_n, T, IS_VARLEN)
    o_t = tl.arange(0, BT)
    o_d = tl.arange(0, D)
    m_causal = o_t[:, None] >= o_t[None, :]
    p_h = (i_n * H + i_h).to(tl.int64) * D * D + o_d[:, None] * D + o_d[None, :]
    if USE_H0:
        b_h = tl.load(h0 + p_h).to(tl.float32)
    else:
        b_h = tl.zeros([D, D], dtype=tl.float32)
    for i_t in range(0, tl.cdiv(length, BT)):
        rows = i_t * BT + o_t
        m_t = (rows < length)[:, None]
        p_x = ((bos + rows) * H + i_h)[:, None] * D + o_d[None, :]
        b_q = tl.load(q + p_x, mask=m_t, other=0.0)
        b_k = tl.load(k + p_x, mask=m_t, other=0.0)
        b_v = tl.load(v + p_x, mask=m_t, other=0.0)
        b_s = tl.where(m_causal, _dot(b_q, tl.trans(b_k), IEEE), 0.0)
        b_o = _dot(b_s.to(b_v.dtype), b_v, IEEE) + _dot(b_q.to(tl.float32), b_h, IEEE)
        tl.store(o + p_x, b_o, mask=m_t)
        b_h += _dot(tl.trans(b_k).to(tl.float32), b_v.to(tl.float32), IEEE)
    if STORE_HT:
        tl.store(ht + p_h, b_h)


@triton.heuristics({
    "USE_H0": lambda args: args["h0"] is not None,
    "USE_DHT": lambda args: args["dht"] is not None,
    "IS_VARLEN": lambda args: args["cu_seqlens"] is not None,
})
@triton.jit
def chunk_linear_bwd_kernel(
    q, k, v, do, h0, dht, dq, dk, dv, dh0, cu_seqlens, T, H,
    D: tl.constexpr, BT: tl.constexpr, IEEE: tl.constexpr,
    USE_H0: tl.constexpr, USE_DHT: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    """Grid (N * H,). do [rows, H, D] fp32; dq, dk, dv [rows, H, D] fp32; dh0 [N, H, D, D] fp32."""
    i_nh = tl.program_id(0)
    i_n, i_h = i_nh // H, i_nh % H
    bos, length = _bounds(cu_seqlens, i_n, T, IS_VARLEN)
    o_t = tl.arange(0, BT)
    o_d = tl.arange(0, D)
    m_causal = o_t[:, None] >= o_t[None, :]
    p_h = (i_n * H + i_h).to(tl.int64) * D * D + o_d[:, None] * D + o_d[None, :]
    if USE_H0:
        b_h = tl.load(h0 + p_h).to(tl.float32)
    else:
        b_h = tl.zeros([D, D], dtype=tl.float32)
    n_chunks = tl.cdiv(length, BT)
    # forward sweep: dq = ((do v^T) ⊙ causal) k + do S^T, S the state before the chunk
    for i_t in range(0, n_chunks):
        rows = i_t * BT + o_t
        m_t = (rows < length)[:, None]
        p_x = ((bos + rows) * H + i_h)[:, None] * D + o_d[None, :]
        b_k = tl.load(k + p_x, mask=m_t, other=0.0).to(tl.float32)
        b_v = tl.load(v + p_x, mask=m_t, other=0.0).to(tl.float32)
        b_do = tl.load(do + p_x, mask=m_t, other=0.0)
        b_ds = tl.where(m_causal, _dot(b_do, tl.trans(b_v), IEEE), 0.0)
        b_dq = _dot(b_ds, b_k, IEEE) + _dot(b_do, tl.trans(b_h), IEEE)
        tl.store(dq + p_x, b_dq, mask=m_t)
        b_h += _dot(tl.trans(b_k), b_v, IEEE)
    # reverse sweep: dS (adjoint of the state after the chunk) carried from the end
    if USE_DHT:
        b_dh = tl.load(dht + p_h).to(tl.float32)
    else:
        b_dh = tl.zeros([D, D], dtype=tl.float32)
    for j_t in range(0, n_chunks):
        i_t = n_chunks - 1 - j_t
        rows = i_t * BT + o_t
        m_t = (rows < length)[:, None]
        p_x = ((bos + rows) * H + i_h)[:, None] * D + o_d[None, :]
        b_q = tl.load(q + p_x, mask=m_t, other=0.0).to(tl.float32)
        b_k = tl.load(k + p_x, mask=m_t, other=0.0).to(tl.float32)
        b_v = tl.load(v + p_x, mask=m_t, other=0.0).to(tl.float32)
        b_do = tl.load(do + p_x, mask=m_t, other=0.0)
        b_s = tl.where(m_causal, _dot(b_q, tl.trans(b_k), IEEE), 0.0)  # [query, key]
        b_ds = tl.where(m_causal, _dot(b_do, tl.trans(b_v), IEEE), 0.0)
        b_dk = _dot(tl.trans(b_ds), b_q, IEEE) + _dot(b_v, tl.trans(b_dh), IEEE)
        b_dv = _dot(tl.trans(b_s), b_do, IEEE) + _dot(b_k, b_dh, IEEE)
        tl.store(dk + p_x, b_dk, mask=m_t)
        tl.store(dv + p_x, b_dv, mask=m_t)
        b_dh += _dot(tl.trans(b_q), b_do, IEEE)
    tl.store(dh0 + p_h, b_dh)


def _grid_args(q: Tensor, cu_seqlens: Tensor | None) -> tuple[int, int, int]:
    """(N sequences, T row stride per sequence, H)."""
    b, t, h, _ = q.shape
    return (b if cu_seqlens is None else cu_seqlens.numel() - 1), t, h


def chunk_linear_fwd(fq: Tensor, fk: Tensor, v: Tensor, h0: Tensor | None, cu_seqlens: Tensor | None,
                     output_final_state: bool) -> tuple[Tensor, Tensor | None]:
    """Unnormalized causal linear attention: (o fp32 [B, T, H, d], final state fp32 or None)."""
    n, t, h = _grid_args(fq, cu_seqlens)
    d = fq.shape[-1]
    o = torch.empty(fq.shape, device=fq.device, dtype=torch.float32)
    ht = torch.empty(n, h, d, d, device=fq.device, dtype=torch.float32) if output_final_state else None
    if n * h:
        chunk_linear_fwd_kernel[(n * h,)](fq, fk, v, o, h0, ht, cu_seqlens, t, h, D=d, BT=CHUNK,
                                          IEEE=fq.dtype == torch.float32, num_warps=4)
    return o, ht


def chunk_linear_bwd(fq: Tensor, fk: Tensor, v: Tensor, do: Tensor, h0: Tensor | None, dht: Tensor | None,
                     cu_seqlens: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dfq, dfk, dv, dh0), fp32."""
    n, t, h = _grid_args(fq, cu_seqlens)
    d = fq.shape[-1]
    dq, dk, dv = (torch.empty(fq.shape, device=fq.device, dtype=torch.float32) for _ in range(3))
    dh0 = torch.empty(n, h, d, d, device=fq.device, dtype=torch.float32)
    if n * h:
        chunk_linear_bwd_kernel[(n * h,)](fq, fk, v, do.float().contiguous(), h0,
                                          None if dht is None else dht.contiguous(), dq, dk, dv, dh0, cu_seqlens,
                                          t, h, D=d, BT=CHUNK, IEEE=fq.dtype == torch.float32, num_warps=4)
    return dq, dk, dv, dh0


class ChunkLinearAttentionFunction(torch.autograd.Function):
    """o_raw = causal linear attention of (phi q, phi k, v) from h0; gradients for all four."""

    @staticmethod
    def forward(ctx, fq, fk, v, h0, cu_seqlens, output_final_state):  # noqa: ANN001, ANN205
        o, ht = chunk_linear_fwd(fq, fk, v, h0, cu_seqlens, output_final_state)
        ctx.save_for_backward(fq, fk, v, h0, cu_seqlens)
        ctx.set_materialize_grads(False)
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):  # noqa: ANN001, ANN205
        fq, fk, v, h0, cu_seqlens = ctx.saved_tensors
        if do is None:
            do = torch.zeros(fq.shape, device=fq.device, dtype=torch.float32)
        dq, dk, dv, dh0 = chunk_linear_bwd(fq, fk, v, do, h0, dht, cu_seqlens)
        return (dq.to(fq.dtype), dk.to(fk.dtype), dv.to(v.dtype), None if h0 is None else dh0.to(h0.dtype),
                None, None)


def positions(q: Tensor, cu_seqlens: Tensor | None) -> tuple[Tensor, Tensor]:
    """(sequence index, position within its sequence) of every row: [B, T] each, or [1, total] when packed."""
    b, t = q.shape[:2]
    if cu_seqlens is None:
        step = torch.arange(t, device=q.device).expand(b, t)
        return torch.arange(b, device=q.device)[:, None].expand(b, t), step
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    seq = torch.repeat_interleave(torch.arange(lengths.numel(), device=q.device), lengths, output_size=t)
    return seq[None], (torch.arange(t, device=q.device) - cu_seqlens[:-1].long()[seq])[None]


def chunk_linear_qla(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    initial_state: Tensor | None = None,
    initial_count: Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """(o [B, T, H, d] in q's dtype, final state [N, H, d, d] fp32 or None); see the module doc.

    initial_state [N, H, d, d] (None: zeros), initial_count [N] events already in it (None: 0). Differentiable
    in q, k, v and the initial state."""
    b, t, h, d = q.shape
    if q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"q, k, v must all be [B, T, H, d]; got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    if cu_seqlens is not None and b != 1:
        raise ValueError(f"with cu_seqlens, q, k, v are packed [1, total, H, d]; got batch {b}")
    if not fr.supported_head_dim(d) or d < MIN_HEAD_DIM:
        raise ValueError(f"chunk_linear_qla needs a head width that is a power of two in [{MIN_HEAD_DIM}, "
                         f"{fr.MAX_HEAD_DIM}]; got {d} (use fused_recurrent)")
    if q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"chunk_linear_qla takes fp32, fp16 or bf16 inputs; got {q.dtype}")
    if q.device.type != "cuda" and not fr.interpreted():
        raise RuntimeError(f"chunk_linear_qla runs on CUDA; got tensors on {q.device} (on a CPU set "
                           "TRITON_INTERPRET=1 before the kernels are imported)")
    n = b if cu_seqlens is None else cu_seqlens.numel() - 1
    if initial_state is not None and tuple(initial_state.shape) != (n, h, d, d):
        raise ValueError(f"initial_state must be [N, H, d, d] = {(n, h, d, d)}; got {tuple(initial_state.shape)}")
    seq, step = positions(q, cu_seqlens)
    count0 = torch.zeros(n, device=q.device) if initial_count is None else initial_count.to(q.device).float()
    norm = count0[seq] + step.float() + 1  # [B, T]
    h0 = None if initial_state is None else initial_state.float().contiguous()
    o_raw, ht = ChunkLinearAttentionFunction.apply(phi(q).contiguous(), phi(k).contiguous(), v.contiguous(), h0,
                                                   cu_seqlens, output_final_state)
    return (o_raw / norm[..., None, None]).to(q.dtype), ht


def chunk_applies(inputs: QLAInputs) -> bool:
    """Whether `qla` on Backend.TRITON takes the chunked form: linear, no decay, no cut points, a head width the
    dots take, fp32/half inputs. Decided by the call's shape alone, before anything runs (never after a failure)."""
    d = inputs.q.shape[-1]
    return (not inputs.outer_phi and inputs.gamma is None and inputs.state_positions is None
            and fr.supported_head_dim(d) and d >= MIN_HEAD_DIM and inputs.q.dtype != torch.float64)


def chunk_qla(inputs: QLAInputs) -> tuple[Tensor, QLAState]:
    """`qla`'s right-padded rows through `chunk_linear_qla`: padded positions get v = 0 (they add nothing to the
    state) and o = 0."""
    q, lengths = inputs.q, inputs.lengths
    fr._check_ranges(lengths, None, q.shape[1])
    live = (torch.arange(q.shape[1], device=q.device)[None, :] < lengths[:, None])[..., None, None]
    o, ht = chunk_linear_qla(q, inputs.k, inputs.v * live, initial_state=inputs.initial_state,
                             initial_count=inputs.initial_count, output_final_state=True)
    return torch.where(live, o, torch.zeros((), dtype=o.dtype, device=o.device)), QLAState(
        ht, inputs.initial_count + lengths.to(inputs.dtype))
