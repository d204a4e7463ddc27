"""Target attention scorer: each candidate attends to [seeds ; recent h^L] and meets a dot-product head.

The candidate's embedding enters only as the first query and in the final dot
product — never through a residual — and nothing mixes two candidates, so a
candidate's logit does not depend on the other candidates of a request.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kernels.qla import Backend
from models.config import ModelConfig


class TargetAttentionLayer(nn.Module):
    """Multi-head softmax attention from candidate queries [B, C, D] to memory tokens [B, S, D]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads = cfg.target_heads
        self.q_norm = nn.LayerNorm(cfg.dim)
        self.x_norm = nn.LayerNorm(cfg.dim)
        self.wq = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.wo = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def keys_values(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Per-user keys and values [B, H, S, dh]: computed once per user, reused by every candidate."""
        x = self.x_norm(tokens)
        shape = (*tokens.shape[:-1], self.heads, -1)
        return self.wk(x).reshape(shape).transpose(1, 2), self.wv(x).reshape(shape).transpose(1, 2)

    def forward(self, query: Tensor, keys: Tensor, values: Tensor, token_mask: Tensor,
                backend: Backend = Backend.TORCH) -> Tensor:
        """query [B or 1, C, D]; keys/values [B, H, S, dh]; token_mask [B, S] -> [B, C, D].

        Each candidate is its own query row of softmax attention, so candidates never interact. With the
        Triton backend and no autograd (scoring), the fused kernel runs it; the kernel is forward-only, so
        training keeps torch's attention.
        """
        q = self.wq(self.q_norm(query)).reshape(*query.shape[:-1], self.heads, -1).transpose(1, 2)
        if backend == Backend.TRITON and not torch.is_grad_enabled():
            from kernels.target.fused import target_attention  # imports triton: only when chosen

            out = target_attention(q.contiguous(), keys, values, token_mask)
        else:
            q = q.expand(keys.shape[0], -1, -1, -1)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=token_mask[:, None, None, :])
        return self.wo(out.transpose(1, 2).flatten(-2))


class TargetScorer(nn.Module):
    """logit_c = < u + W_r LayerNorm(r_c), E_item[c] >, u = LayerNorm(h_T^L)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.recency = nn.Parameter(torch.randn(cfg.recent_slots, cfg.dim) * 0.02)
        self.layers = nn.ModuleList(TargetAttentionLayer(cfg) for _ in range(cfg.target_layers))
        self.u_norm = nn.LayerNorm(cfg.dim)
        self.r_norm = nn.LayerNorm(cfg.dim)
        self.w_r = nn.Linear(cfg.dim, cfg.dim, bias=False)
        # zero init: the target readout starts as a no-op on top of the sequence readout and only grows
        # where it lowers the loss (measured: random init made the combined model rank worse than u alone)
        nn.init.zeros_(self.w_r.weight)
        self.backend = Backend.TORCH  # set with the model's (VistaModel.backend)

    def memory_tokens(self, seeds: Tensor, recent: Tensor, recent_mask: Tensor) -> tuple[Tensor, Tensor]:
        """X = [seeds ; recent + recency embeddings] [B, K+R, D] and its mask [B, K+R]."""
        b = seeds.shape[0]
        seed_mask = torch.ones(b, seeds.shape[1], dtype=torch.bool, device=seeds.device)
        if self.cfg.recent == 0:
            return seeds, seed_mask
        recent = recent[:, -self.cfg.recent :]
        mask = recent_mask[:, -self.cfg.recent :]
        # newest event sits last; recency embedding 0 belongs to the newest
        pos = self.recency[: recent.shape[1]].flip(0)
        tokens = torch.cat([seeds, recent + pos[None]], dim=1)
        return tokens, torch.cat([seed_mask, mask], dim=1)

    def user_vector(self, last_h: Tensor) -> Tensor:
        return self.u_norm(last_h)

    def sequence_logits(self, last_h: Tensor, candidate_emb: Tensor) -> Tensor:
        """<u, e_c>, the sequence readout's term of the logit (and a cascade's retrieval score) -> [B, C].

        candidate_emb [1, C, D] (a shared catalog: one matmul; an elementwise [B, C, D] product was ~2x slower
        on Beauty's 12k items) or [B, C, D]."""
        u = self.user_vector(last_h)
        if candidate_emb.shape[0] == 1:
            return u @ candidate_emb[0].T
        return (candidate_emb @ u[:, :, None]).squeeze(-1)

    def delta(self, candidate_emb: Tensor, seeds: Tensor, recent: Tensor, recent_mask: Tensor) -> Tensor:
        """The target-attention correction Δ(c) = <W_r LayerNorm(r_c), e_c> [B, C]: each candidate attends
        over the seeds and the recent tokens. W_r starts at zero, so an untrained Δ is exactly 0 and the whole
        model ranks as the stack does."""
        tokens, mask = self.memory_tokens(seeds, recent, recent_mask)
        r = None
        for layer in self.layers:
            keys, values = layer.keys_values(tokens)
            step = layer(candidate_emb if r is None else r, keys, values, mask, self.backend)
            r = step if r is None else r + step
        return (self.w_r(self.r_norm(r)) * candidate_emb).sum(-1)

    def forward(
        self,
        candidate_emb: Tensor,
        seeds: Tensor | None,
        recent: Tensor,
        recent_mask: Tensor,
        last_h: Tensor,
    ) -> Tensor:
        """candidate_emb [B, C, D] or [1, C, D] (shared candidates) -> logits [B, C]: <u, e_c> + Δ(c).

        seeds may be None when the target readout is off (nothing reads them)."""
        b = last_h.shape[0]
        logits = torch.zeros(b, candidate_emb.shape[1], device=last_h.device, dtype=last_h.dtype)
        if self.cfg.sequence_readout:
            logits = logits + self.sequence_logits(last_h, candidate_emb)
        if self.cfg.target_readout:
            if seeds is None:
                raise ValueError("this model's target readout needs the user's seeds")
            logits = logits + self.delta(candidate_emb, seeds, recent, recent_mask)
        return logits
