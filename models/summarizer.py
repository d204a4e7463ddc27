"""Seed summarizer: K learned tokens read each layer's memory M^l/n with that layer's weights.

Seeds never attend to each other and history never attends to seeds, so the
summary is a pure function of the state: recompute it once per user per batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kernels.qla import normalized_memory, phi
from models.config import ModelConfig
from models.qla import HistoryLayer, HistoryStack


def _norm(kind: str, dim: int) -> nn.Module:
    return nn.LayerNorm(dim) if kind == "layernorm" else nn.RMSNorm(dim, eps=1e-6)


class SeedSummarizer(nn.Module):
    """s_j^l = s_j^{l-1} + W_o^l(Norm(z_j) ⊙ phi(u_j)), z_j = phi(q_j)·phi(M^l/n) [+ paper's self term]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.seeds = nn.Parameter(torch.randn(cfg.num_seeds, cfg.dim) * cfg.seed_init_std)
        self.in_norms = nn.ModuleList(_norm(cfg.seed_norm, cfg.dim) for _ in range(cfg.layers))
        self.out_norms = nn.ModuleList(_norm(cfg.seed_norm, cfg.dim) for _ in range(cfg.layers))
        # projections of the seeds: None = the history layers' own W^l (the design); else separate copies
        self.own_layers = nn.ModuleList(HistoryLayer(cfg) for _ in range(cfg.layers)) if cfg.seed_weights == "own" else None

    def forward(self, stack: HistoryStack, memory: Tensor, count: Tensor) -> Tensor:
        """memory [B, L, H, d, d], count [B] -> summary E [B, K, D]."""
        b = memory.shape[0]
        s = self.seeds.expand(b, -1, -1)
        layers = stack.layers if self.own_layers is None else self.own_layers
        for l, layer in enumerate(layers):
            q, k, v, u = layer.split_heads(self.in_norms[l](s))  # [B, K, H, d]
            mem = normalized_memory(memory[:, l], count.float(), self.cfg.outer_phi, stack.gamma)  # [B, H, d, d]
            z = torch.einsum("bkhd,bhde->bkhe", phi(q), mem)
            if self.cfg.seed_self_term:
                z = z + (phi(q) * phi(k)).sum(-1, keepdim=True) * v
            s = layer.output(s, z, u, self.out_norms[l])
        return s
