"""Target attention in Triton: one program per (user, head, block of candidates); the user's K + R tokens
(at most a few hundred) fit one block, so the softmax is exact in one pass (no online rescaling) and the
keys and values are read once per block of candidates, not once per candidate.

Forward only (the scorer runs without gradients). Candidates never meet each other: each is a row of the
score block, normalized over its own tokens only. Head widths are powers of two <= 128; scores and the
softmax are fp32 whatever the input dtype.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from kernels.qla import fused_recurrent as fr

BLOCK_C = 16


@triton.jit
def target_attention_fwd_kernel(
    q, k, v, mask, o, scale,
    s_qb, s_qh, s_qc, s_qd,
    s_kb, s_kh, s_ks, s_kd,
    s_vb, s_vh, s_vs, s_vd,
    s_mb, s_ms,
    H, C, S,
    DH: tl.constexpr, BC: tl.constexpr, BS: tl.constexpr,
):
    """Grid (cdiv(C, BC), B * H). q [B or 1, H, C, DH] (s_qb 0 when shared); k, v [B, H, S, DH];
    mask [B, S] int8; o [B, H, C, DH] contiguous."""
    i_c, i_bh = tl.program_id(0), tl.program_id(1)
    i_b = (i_bh // H).to(tl.int64)
    i_h = (i_bh % H).to(tl.int64)
    o_c = i_c * BC + tl.arange(0, BC)
    o_s = tl.arange(0, BS)
    o_d = tl.arange(0, DH)
    m_c = o_c < C
    m_s = o_s < S
    b_q = tl.load(q + i_b * s_qb + i_h * s_qh + o_c[:, None] * s_qc + o_d[None, :] * s_qd,
                  mask=m_c[:, None], other=0.0).to(tl.float32)
    b_k = tl.load(k + i_b * s_kb + i_h * s_kh + o_s[:, None] * s_ks + o_d[None, :] * s_kd,
                  mask=m_s[:, None], other=0.0).to(tl.float32)
    b_v = tl.load(v + i_b * s_vb + i_h * s_vh + o_s[:, None] * s_vs + o_d[None, :] * s_vd,
                  mask=m_s[:, None], other=0.0).to(tl.float32)
    b_m = tl.load(mask + i_b * s_mb + o_s * s_ms, mask=m_s, other=0) != 0
    b_s = tl.sum(b_q[:, None, :] * b_k[None, :, :], axis=2) * scale  # [BC, BS]
    b_s = tl.where(b_m[None, :], b_s, float("-inf"))
    b_p = tl.exp(b_s - tl.max(b_s, axis=1)[:, None])
    b_p = b_p / tl.sum(b_p, axis=1)[:, None]
    b_o = tl.sum(b_p[:, :, None] * b_v[None, :, :], axis=1)  # [BC, DH]
    p_o = o + ((i_b * H + i_h) * C + o_c[:, None]) * DH + o_d[None, :]
    tl.store(p_o, b_o.to(o.dtype.element_ty), mask=m_c[:, None])


def target_attention(q: Tensor, k: Tensor, v: Tensor, token_mask: Tensor) -> Tensor:
    """Same arguments and result as `naive_target_attention`. Every user needs at least one token to attend."""
    b, h, s, dh = k.shape
    if q.dim() != 4 or q.shape[0] not in (1, b) or q.shape[1] != h or q.shape[3] != dh or v.shape != k.shape:
        raise ValueError(f"q must be [B or 1, H, C, dh] and k, v [B, H, S, dh]; got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if tuple(token_mask.shape) != (b, s):
        raise ValueError(f"token_mask must be [B, S] = {(b, s)}; got {tuple(token_mask.shape)}")
    if dh & (dh - 1) or dh > 128:
        raise ValueError(f"target_attention needs a head width that is a power of two <= 128; got {dh}")
    if q.device.type != "cuda" and not fr.interpreted():
        raise RuntimeError(f"target_attention runs on CUDA; got tensors on {q.device} (on a CPU set "
                           "TRITON_INTERPRET=1 before the kernels are imported)")
    c = q.shape[2]
    o = torch.empty(b, h, c, dh, device=q.device, dtype=q.dtype)
    if b * h * c == 0:
        return o
    mask = token_mask.to(torch.int8)
    s_qb = 0 if q.shape[0] == 1 else q.stride(0)
    target_attention_fwd_kernel[(triton.cdiv(c, BLOCK_C), b * h)](
        q, k, v, mask, o, 1.0 / math.sqrt(dh),
        s_qb, *q.stride()[1:], *k.stride(), *v.stride(), *mask.stride(),
        h, c, s,
        DH=dh, BC=BLOCK_C, BS=max(16, triton.next_power_of_2(s)),
    )
    return o
