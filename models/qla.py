"""Causal QLA history stack: L layers, each keeping a fixed-size per-user sum M^l."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from kernels.qla import Backend, phi, qla
from models.config import ModelConfig


class HistoryLayer(nn.Module):
    """h_t^l = h_t^{l-1} + W_o (RMSNorm(o_t) ⊙ phi(u_t)), o_t = phi(q_t)·phi(M_t/n_t).

    `proj` and `out` are shared with the seed summarizer's layer l (design note).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.norm = nn.RMSNorm(cfg.dim, eps=1e-6)
        self.proj = nn.Linear(cfg.dim, 4 * cfg.dim, bias=False)
        self.out_norm = nn.RMSNorm(cfg.dim, eps=1e-6)
        self.out = nn.Linear(cfg.dim, cfg.dim, bias=False)
        nn.init.normal_(self.proj.weight, std=1.0 / math.sqrt(cfg.dim))
        nn.init.normal_(self.out.weight, std=0.5 / math.sqrt(cfg.dim))
        self.drop = nn.Dropout(cfg.dropout)

    def split_heads(self, a: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """[..., D] normalized input -> q, k, v, u each [..., H, d]."""
        q, k, v, u = self.proj(a).chunk(4, dim=-1)
        shape = (*a.shape[:-1], self.cfg.heads, self.cfg.head_dim)
        return q.reshape(shape), k.reshape(shape), v.reshape(shape), u.reshape(shape)

    def output(self, residual: Tensor, o: Tensor, u: Tensor, norm: nn.Module) -> Tensor:
        """residual + W_o(norm(o) ⊙ phi(u)) with heads flattened."""
        flat = o.flatten(-2)
        return residual + self.drop(self.out(norm(flat) * phi(u.flatten(-2))))


class HistoryStack(nn.Module):
    """The causal history encoder. `scan` is the one implementation used by training, update and backfill."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList(HistoryLayer(cfg) for _ in range(cfg.layers))
        if cfg.decay:
            gammas = 1.0 - torch.logspace(math.log10(1.0 - cfg.decay_min), -4, cfg.heads)
            self.register_buffer("gamma", gammas.float(), persistent=True)
        else:
            self.gamma = None

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        count: Tensor,
        lengths: Tensor,
        *,
        state_positions: Tensor | None = None,
        backend: Backend = Backend.TORCH,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """One pass over right-padded events x [B, T, D] from memory [B, L, H, d, d] and count [B].

        Returns h^L [B, T, D], the new memory [B, L, H, d, d], and the memory at
        `state_positions` [B, C, L, H, d, d] when asked (training cut points).
        """
        h = x
        finals, at = [], []
        for l, layer in enumerate(self.layers):
            q, k, v, u = layer.split_heads(layer.norm(h))
            o, final = qla(q, k, v, initial_state=memory[:, l], initial_count=count.float(), lengths=lengths,
                           outer_phi=self.cfg.outer_phi, gamma=self.gamma, state_positions=state_positions,
                           output_final_state=True, backend=backend)
            h = layer.output(h, o, u, layer.out_norm)
            finals.append(final.state)
            if state_positions is not None:
                at.append(final.states_at)
        states_at = torch.stack(at, dim=2) if state_positions is not None else None
        return h, torch.stack(finals, dim=1), states_at
