"""Chunked linear QLA (outer_phi=False) in Triton, forward and backward, on tensor cores.

    o, final = chunk_linear_qla(q, k, v, gamma=gamma, initial_state=M0, initial_count=N0,
                                output_final_state=True, cu_seqlens=cu)

o_t = phi(q_t) · M_t / n_t with M_t = gamma M_{t-1} + phi(k_t)^T v_t from M_0, the per-head decay gamma [H]
fixed (None: 1), and n_t the normalizer of the count N_0 + t + 1 (`utils.normalizer`). phi and 1/n are
elementwise torch (autograd differentiates them); the kernels do plain causal decayed linear attention from an
initial state, one program per (sequence, head) walking chunks of BT positions with the d×d state S in
registers. Inside a chunk of n rows (local i, j; A_ij = gamma^(i-j) for j <= i, else 0):

    o_i = ((q k^T) ⊙ A) v + gamma^(i+1) q_i S          S <- gamma^n S + (gamma^(n-1-j) k_j)^T v

all `tl.dot`s on [BT, d] blocks, every power of gamma with an exponent in [0, BT] (no division: a small gamma
underflows to 0, never to inf/NaN), the state carried across chunks by gamma^n alone. The backward recomputes
rather than stores: dq in a forward sweep (the states before each chunk, rebuilt on the way), dk, dv in a
reverse sweep carrying dS.

For training's cut points the forward can also write the state before every chunk (`hs`); `chunk_qla` turns it
into the state after any position with a torch fix-up of at most BT events, and the kernel's backward takes
that gradient back (`dhs`).

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
from kernels.qla.utils import QLAInputs, QLAState, normalizer, phi

CHUNK = 32
MIN_HEAD_DIM = 16  # tl.dot needs every block dimension >= 16


@triton.jit
def _dot(a, b, IEEE: tl.constexpr):
    if IEEE:
        return tl.dot(a, b, input_precision="ieee")
    return tl.dot(a, b)


@triton.jit
def _bounds(cu_seqlens, lengths, i_n, T, IS_VARLEN: tl.constexpr, USE_LENGTHS: tl.constexpr):
    """(first row, length) of sequence i_n in a [B*T] (or packed [total]) row space; right-padded rows stop at
    lengths[i_n]."""
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
        return bos, (eos - bos).to(tl.int32)
    if USE_LENGTHS:
        return i_n.to(tl.int64) * T, tl.load(lengths + i_n).to(tl.int32)
    return i_n.to(tl.int64) * T, T


@triton.jit
def _log_gamma(gamma, i_h, USE_GAMMA: tl.constexpr):
    """log gamma_h (0 without decay: every power below is then exactly 1)."""
    if USE_GAMMA:
        return tl.log(tl.load(gamma + i_h).to(tl.float32))
    return 0.0


@triton.jit
def _decays(b_lg, o_t, n_t, m_causal):
    """Decay factors of a chunk of n_t real rows: gamma^(i+1) for the queries' read of the carried state [BT],
    gamma^(n_t-1-j) for the keys' write into the next one [BT] (0 past n_t), gamma^(i-j) on the causal part
    [BT, BT] (0 above it), gamma^n_t. Exponents lie in [0, BT] (no division, no overflow); the masked entries
    are chosen by `where`, so their (possibly infinite) powers never reach a product."""
    o_f = o_t.to(tl.float32)
    b_gq = tl.exp((o_f + 1.0) * b_lg)
    b_gk = tl.where(o_t < n_t, tl.exp((n_t - 1 - o_f) * b_lg), 0.0)
    b_a = tl.where(m_causal, tl.exp((o_f[:, None] - o_f[None, :]) * b_lg), 0.0)
    b_gn = tl.exp(n_t.to(tl.float32) * b_lg)
    return b_gq, b_gk, b_a, b_gn


@triton.heuristics({
    "USE_GAMMA": lambda args: args["gamma"] is not None,
    "USE_H0": lambda args: args["h0"] is not None,
    "STORE_HT": lambda args: args["ht"] is not None,
    "STORE_HS": lambda args: args["hs"] is not None,
    "USE_LENGTHS": lambda args: args["lengths"] is not None,
    "IS_VARLEN": lambda args: args["cu_seqlens"] is not None,
})
@triton.jit
def chunk_linear_fwd_kernel(
    q, k, v, o, gamma, h0, ht, hs, lengths, cu_seqlens, T, H, NT,
    D: tl.constexpr, BT: tl.constexpr, IEEE: tl.constexpr, USE_GAMMA: tl.constexpr,
    USE_H0: tl.constexpr, STORE_HT: tl.constexpr, STORE_HS: tl.constexpr, USE_LENGTHS: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    """Grid (N * H,). q, k, v [rows, H, D] contiguous in q's dtype; o [rows, H, D] fp32; gamma [H] fp32;
    h0, ht [N, H, D, D]; hs [N, NT, H, D, D] the state before each chunk (right-padded rows only); lengths [N]."""
    i_nh = tl.program_id(0)
    i_n, i_h = i_nh // H, i_nh % H
    bos, length = _bounds(cu_seqlens, lengths, i_n, T, IS_VARLEN, USE_LENGTHS)
    b_lg = _log_gamma(gamma, i_h, USE_GAMMA)
    o_t = tl.arange(0, BT)
    o_d = tl.arange(0, D)
    o_dd = o_d[:, None] * D + o_d[None, :]
    m_causal = o_t[:, None] >= o_t[None, :]
    p_h = (i_n * H + i_h).to(tl.int64) * D * D + o_dd
    if USE_H0:
        b_h = tl.load(h0 + p_h).to(tl.float32)
    else:
        b_h = tl.zeros([D, D], dtype=tl.float32)
    for i_t in range(0, tl.cdiv(length, BT)):
        if STORE_HS:
            tl.store(hs + ((i_n * NT + i_t) * H + i_h).to(tl.int64) * D * D + o_dd, b_h)
        rows = i_t * BT + o_t
        m_t = (rows < length)[:, None]
        b_gq, b_gk, b_a, b_gn = _decays(b_lg, o_t, tl.minimum(length - i_t * BT, BT), m_causal)
        p_x = ((bos + rows) * H + i_h)[:, None] * D + o_d[None, :]
        b_q = tl.load(q + p_x, mask=m_t, other=0.0)
        b_k = tl.load(k + p_x, mask=m_t, other=0.0)
        b_v = tl.load(v + p_x, mask=m_t, other=0.0)
        b_s = _dot(b_q, tl.trans(b_k), IEEE) * b_a
        b_o = _dot(b_s.to(b_v.dtype), b_v, IEEE) + _dot(b_q.to(tl.float32) * b_gq[:, None], b_h, IEEE)
        tl.store(o + p_x, b_o, mask=m_t)
        b_h = b_h * b_gn + _dot(tl.trans(b_k.to(tl.float32) * b_gk[:, None]), b_v.to(tl.float32), IEEE)
    if STORE_HT:
        tl.store(ht + p_h, b_h)


@triton.heuristics({
    "USE_GAMMA": lambda args: args["gamma"] is not None,
    "USE_H0": lambda args: args["h0"] is not None,
    "USE_DHT": lambda args: args["dht"] is not None,
    "USE_DHS": lambda args: args["dhs"] is not None,
    "USE_LENGTHS": lambda args: args["lengths"] is not None,
    "IS_VARLEN": lambda args: args["cu_seqlens"] is not None,
})
@triton.jit
def chunk_linear_bwd_kernel(
    q, k, v, do, gamma, h0, dht, dhs, dq, dk, dv, dh0, lengths, cu_seqlens, T, H, NT,
    D: tl.constexpr, BT: tl.constexpr, IEEE: tl.constexpr, USE_GAMMA: tl.constexpr,
    USE_H0: tl.constexpr, USE_DHT: tl.constexpr, USE_DHS: tl.constexpr, USE_LENGTHS: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    """Grid (N * H,). do [rows, H, D] fp32; dq, dk, dv [rows, H, D] fp32; dh0 [N, H, D, D] fp32; dhs
    [N, NT, H, D, D] the gradient of the chunk-start states `hs` (joins the adjoint at each chunk's start)."""
    i_nh = tl.program_id(0)
    i_n, i_h = i_nh // H, i_nh % H
    bos, length = _bounds(cu_seqlens, lengths, i_n, T, IS_VARLEN, USE_LENGTHS)
    b_lg = _log_gamma(gamma, i_h, USE_GAMMA)
    o_t = tl.arange(0, BT)
    o_d = tl.arange(0, D)
    o_dd = o_d[:, None] * D + o_d[None, :]
    m_causal = o_t[:, None] >= o_t[None, :]
    p_h = (i_n * H + i_h).to(tl.int64) * D * D + o_dd
    if USE_H0:
        b_h = tl.load(h0 + p_h).to(tl.float32)
    else:
        b_h = tl.zeros([D, D], dtype=tl.float32)
    n_chunks = tl.cdiv(length, BT)
    # forward sweep: dq = ((do v^T) ⊙ A) k + (gamma^(i+1) do) S^T, S the state before the chunk
    for i_t in range(0, n_chunks):
        rows = i_t * BT + o_t
        m_t = (rows < length)[:, None]
        b_gq, b_gk, b_a, b_gn = _decays(b_lg, o_t, tl.minimum(length - i_t * BT, BT), m_causal)
        p_x = ((bos + rows) * H + i_h)[:, None] * D + o_d[None, :]
        b_k = tl.load(k + p_x, mask=m_t, other=0.0).to(tl.float32)
        b_v = tl.load(v + p_x, mask=m_t, other=0.0).to(tl.float32)
        b_do = tl.load(do + p_x, mask=m_t, other=0.0)
        b_ds = _dot(b_do, tl.trans(b_v), IEEE) * b_a
        b_dq = _dot(b_ds, b_k, IEEE) + _dot(b_do * b_gq[:, None], tl.trans(b_h), IEEE)
        tl.store(dq + p_x, b_dq, mask=m_t)
        b_h = b_h * b_gn + _dot(tl.trans(b_k * b_gk[:, None]), b_v, IEEE)
    # reverse sweep: dS (adjoint of the state after the chunk) carried from the end
    if USE_DHT:
        b_dh = tl.load(dht + p_h).to(tl.float32)
    else:
        b_dh = tl.zeros([D, D], dtype=tl.float32)
    for j_t in range(0, n_chunks):
        i_t = n_chunks - 1 - j_t
        rows = i_t * BT + o_t
        m_t = (rows < length)[:, None]
        b_gq, b_gk, b_a, b_gn = _decays(b_lg, o_t, tl.minimum(length - i_t * BT, BT), m_causal)
        p_x = ((bos + rows) * H + i_h)[:, None] * D + o_d[None, :]
        b_q = tl.load(q + p_x, mask=m_t, other=0.0).to(tl.float32)
        b_k = tl.load(k + p_x, mask=m_t, other=0.0).to(tl.float32)
        b_v = tl.load(v + p_x, mask=m_t, other=0.0).to(tl.float32)
        b_do = tl.load(do + p_x, mask=m_t, other=0.0)
        b_s = _dot(b_q, tl.trans(b_k), IEEE) * b_a  # [query, key]
        b_ds = _dot(b_do, tl.trans(b_v), IEEE) * b_a
        b_dk = _dot(tl.trans(b_ds), b_q, IEEE) + _dot(b_v, tl.trans(b_dh), IEEE) * b_gk[:, None]
        b_dv = _dot(tl.trans(b_s), b_do, IEEE) + _dot(b_k, b_dh, IEEE) * b_gk[:, None]
        tl.store(dk + p_x, b_dk, mask=m_t)
        tl.store(dv + p_x, b_dv, mask=m_t)
        b_dh = b_dh * b_gn + _dot(tl.trans(b_q * b_gq[:, None]), b_do, IEEE)
        if USE_DHS:
            b_dh += tl.load(dhs + ((i_n * NT + i_t) * H + i_h).to(tl.int64) * D * D + o_dd)
    tl.store(dh0 + p_h, b_dh)


def _grid_args(q: Tensor, cu_seqlens: Tensor | None) -> tuple[int, int, int]:
    """(N sequences, T row stride per sequence, H)."""
    b, t, h, _ = q.shape
    return (b if cu_seqlens is None else cu_seqlens.numel() - 1), t, h


def _alloc(shape: tuple[int, ...], like: Tensor, padded: bool) -> Tensor:
    """fp32 per-row output: zeros when right-padded rows exist (the kernels write real rows only)."""
    return (torch.zeros if padded else torch.empty)(shape, device=like.device, dtype=torch.float32)


def chunk_linear_fwd(fq: Tensor, fk: Tensor, v: Tensor, gamma: Tensor | None, h0: Tensor | None,
                     lengths: Tensor | None, cu_seqlens: Tensor | None, output_final_state: bool,
                     chunk_states: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Unnormalized causal decayed linear attention: (o fp32 [B, T, H, d] (0 at padded rows), final state fp32
    or None, the states before each chunk [B, NT, H, d, d] fp32 or None)."""
    n, t, h = _grid_args(fq, cu_seqlens)
    d = fq.shape[-1]
    nt = triton.cdiv(t, CHUNK)
    o = _alloc(fq.shape, fq, lengths is not None)
    ht = torch.empty(n, h, d, d, device=fq.device, dtype=torch.float32) if output_final_state else None
    hs = torch.empty(n, nt, h, d, d, device=fq.device, dtype=torch.float32) if chunk_states else None
    if n * h:
        chunk_linear_fwd_kernel[(n * h,)](fq, fk, v, o, gamma, h0, ht, hs, lengths, cu_seqlens, t, h, nt, D=d,
                                          BT=CHUNK, IEEE=fq.dtype == torch.float32, num_warps=4)
    return o, ht, hs


def chunk_linear_bwd(fq: Tensor, fk: Tensor, v: Tensor, do: Tensor, gamma: Tensor | None, h0: Tensor | None,
                     dht: Tensor | None, dhs: Tensor | None, lengths: Tensor | None, cu_seqlens: Tensor | None,
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dfq, dfk, dv, dh0), fp32 (0 at padded rows)."""
    n, t, h = _grid_args(fq, cu_seqlens)
    d = fq.shape[-1]
    dq, dk, dv = (_alloc(fq.shape, fq, lengths is not None) for _ in range(3))
    dh0 = torch.empty(n, h, d, d, device=fq.device, dtype=torch.float32)
    if n * h:
        chunk_linear_bwd_kernel[(n * h,)](fq, fk, v, do.float().contiguous(), gamma, h0,
                                          None if dht is None else dht.contiguous(),
                                          None if dhs is None else dhs.contiguous(), dq, dk, dv, dh0, lengths,
                                          cu_seqlens, t, h, triton.cdiv(t, CHUNK), D=d, BT=CHUNK,
                                          IEEE=fq.dtype == torch.float32, num_warps=4)
    return dq, dk, dv, dh0


class ChunkLinearAttentionFunction(torch.autograd.Function):
    """o_raw = causal decayed linear attention of (phi q, phi k, v) from h0; gradients for those four (and from
    o, the final state and the chunk-start states); gamma, lengths and cu_seqlens are data."""

    @staticmethod
    def forward(ctx, fq, fk, v, gamma, h0, lengths, cu_seqlens, output_final_state, chunk_states):  # noqa: ANN001, ANN205
        o, ht, hs = chunk_linear_fwd(fq, fk, v, gamma, h0, lengths, cu_seqlens, output_final_state, chunk_states)
        ctx.save_for_backward(fq, fk, v, gamma, h0, lengths, cu_seqlens)
        ctx.set_materialize_grads(False)
        return o, ht, hs

    @staticmethod
    def backward(ctx, do, dht, dhs):  # noqa: ANN001, ANN205
        fq, fk, v, gamma, h0, lengths, cu_seqlens = ctx.saved_tensors
        if do is None:
            do = torch.zeros(fq.shape, device=fq.device, dtype=torch.float32)
        dq, dk, dv, dh0 = chunk_linear_bwd(fq, fk, v, do, gamma, h0, dht, dhs, lengths, cu_seqlens)
        return (dq.to(fq.dtype), dk.to(fk.dtype), dv.to(v.dtype), None,
                None if h0 is None else dh0.to(h0.dtype), None, None, None, None)


def positions(q: Tensor, cu_seqlens: Tensor | None) -> tuple[Tensor, Tensor]:
    """(sequence index, position within its sequence) of every row: [B, T] each, or [1, total] when packed."""
    b, t = q.shape[:2]
    if cu_seqlens is None:
        step = torch.arange(t, device=q.device).expand(b, t)
        return torch.arange(b, device=q.device)[:, None].expand(b, t), step
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    seq = torch.repeat_interleave(torch.arange(lengths.numel(), device=q.device), lengths, output_size=t)
    return seq[None], (torch.arange(t, device=q.device) - cu_seqlens[:-1].long()[seq])[None]


def _check_gamma(gamma: Tensor | None, heads: int, device: torch.device) -> Tensor | None:
    """gamma as fp32 [H] on the inputs' device; refused when it wants a gradient (the kernels give none)."""
    if gamma is None:
        return None
    if tuple(gamma.shape) != (heads,):
        raise ValueError(f"gamma must be [H] = [{heads}]; got {tuple(gamma.shape)}")
    if gamma.requires_grad and torch.is_grad_enabled():
        raise ValueError("chunk_linear_qla differentiates q, k, v and the initial state only; the decay gamma is "
                         "data here (use Backend.TORCH to learn it)")
    return gamma.detach().to(device=device, dtype=torch.float32).contiguous()


def _chunk_linear(q: Tensor, k: Tensor, v: Tensor, gamma: Tensor | None, initial_state: Tensor | None,
                  initial_count: Tensor | None, lengths: Tensor | None, cu_seqlens: Tensor | None,
                  output_final_state: bool, chunk_states: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """`chunk_linear_qla` plus what `chunk_qla` needs: right-padded rows (`lengths` [B]; their o is 0 and they
    leave the state alone) and the states before each chunk. Returns (o, final state, chunk-start states)."""
    b, _, h, d = q.shape
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
    g = _check_gamma(gamma, h, q.device)
    seq, step = positions(q, cu_seqlens)
    count0 = torch.zeros(n, device=q.device) if initial_count is None else initial_count.to(q.device).float()
    norm = normalizer(count0[seq] + step.float() + 1, g, h)  # [B, T, H]
    h0 = None if initial_state is None else initial_state.float().contiguous()
    lengths32 = None if lengths is None else lengths.to(device=q.device, dtype=torch.int32).contiguous()
    o_raw, ht, hs = ChunkLinearAttentionFunction.apply(phi(q).contiguous(), phi(k).contiguous(), v.contiguous(), g,
                                                       h0, lengths32, cu_seqlens, output_final_state, chunk_states)
    return (o_raw / norm[..., None]).to(q.dtype), ht, hs


def chunk_linear_qla(
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
    """(o [B, T, H, d] in q's dtype, final state [N, H, d, d] fp32 or None); see the module doc.

    gamma [H] fixed per-head decay in (0, 1] (None: no decay; one that requires grad is refused), initial_state
    [N, H, d, d] (None: zeros), initial_count [N] events already in it (None: 0). Differentiable in q, k, v and
    the initial state."""
    o, ht, _ = _chunk_linear(q, k, v, gamma, initial_state, initial_count, None, cu_seqlens, output_final_state,
                             False)
    return o, ht


def chunk_applies(inputs: QLAInputs) -> bool:
    """Whether `qla` on Backend.TRITON takes the chunked form: linear (with or without decay, with or without
    cut points), a head width the dots take, fp32/half inputs. Decided by the call's shape alone, before
    anything runs (never after a failure)."""
    d = inputs.q.shape[-1]
    return (not inputs.outer_phi and fr.supported_head_dim(d) and d >= MIN_HEAD_DIM
            and inputs.q.dtype != torch.float64)


def states_after(hs: Tensor, k: Tensor, v: Tensor, gamma: Tensor | None, pos: Tensor) -> Tensor:
    """M after positions pos [B, C] from the chunk-start states hs [B, NT, H, d, d] and the rows of k, v
    [B, T, H, d]: M_p = gamma^(r+1) S_c + sum_{j<=r} gamma^(r-j) phi(k_j)^T v_j over the r + 1 <= BT events of
    p's chunk c before it. Plain torch (autograd reaches hs, k, v); [B, C, H, d, d] fp32."""
    b = k.shape[0]
    c_idx, r = pos // CHUNK, pos % CHUNK  # [B, C]
    j = torch.arange(CHUNK, device=k.device)
    live = j <= r[..., None]  # [B, C, BT]
    rows = torch.where(live, c_idx[..., None] * CHUNK + j, 0)
    i_b = torch.arange(b, device=k.device)[:, None, None]
    fk, vv = phi(k[i_b, rows].float()), v[i_b, rows].float()  # [B, C, BT, H, d]
    start = hs[torch.arange(b, device=k.device)[:, None], c_idx]  # [B, C, H, d, d]
    if gamma is None:
        w = live.float()[..., None]  # [B, C, BT, 1]
        return start + torch.einsum("bcjhd,bcjhe->bchde", fk * w[..., None], vv)
    g = gamma.float()
    w = torch.where(live[..., None], g ** (r[..., None] - j).clamp(min=0)[..., None].float(), 0.0)  # [B, C, BT, H]
    decay = g ** (r[..., None] + 1).float()  # [B, C, H]
    return decay[..., None, None] * start + torch.einsum("bcjhd,bcjhe->bchde", fk * w[..., None], vv)


def chunk_qla(inputs: QLAInputs) -> tuple[Tensor, QLAState]:
    """`qla`'s right-padded rows through the chunked kernels: padded positions leave the state alone (the kernel
    stops at each row's length) and get o = 0; cut points come from the chunk-start states (`states_after`)."""
    q, lengths, pos = inputs.q, inputs.lengths, inputs.state_positions
    fr._check_ranges(lengths, pos, q.shape[1])
    o, ht, hs = _chunk_linear(q, inputs.k, inputs.v, inputs.gamma, inputs.initial_state, inputs.initial_count,
                              lengths, None, True, pos is not None)
    final_count = inputs.initial_count + lengths.to(inputs.dtype)
    if pos is None:
        return o, QLAState(ht, final_count)
    states_at = states_after(hs, inputs.k, inputs.v, inputs.gamma, pos)
    return o, QLAState(ht, final_count, states_at, inputs.initial_count[:, None] + (pos + 1).to(inputs.dtype))
