"""Memory readout: each candidate reads every layer's stored memory M^l/n with a query of its own.

m(c) = Σ_l < W_o^l (phi(W_q^l x_c) · M^l/n) · s, x_c >, x_c = LayerNorm(e_c), s = `memory_read_scale`: the
candidate enters normalized on both sides, so the read's scale does not wait for the item table to grow.
M^l/n is the soft average of phi(k_i) v_i over every event the user ever had, so the read is a learned kernel
sum over the whole history, "how much of this user's past looks like c", exact and at a cost fixed in history
length (O(L·H·d²) per candidate). It is what a return to an interest dormant for thousands of events needs, and what no window and no fixed set of
seeds can ask per candidate (docs/quality.md, the lifelong world). Nothing mixes two candidates.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kernels.qla import normalized_memory, phi
from models.config import ModelConfig


class MemoryReadout(nn.Module):
    """The candidate-query read of the stored memory; W_o starts at zero, so an untrained read adds nothing."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.norm = nn.LayerNorm(cfg.dim)
        self.query = nn.ModuleList(nn.Linear(cfg.dim, cfg.dim, bias=False) for _ in range(cfg.layers))
        self.out = nn.ModuleList(nn.Linear(cfg.dim, cfg.dim, bias=False) for _ in range(cfg.layers))
        for out in self.out:
            nn.init.zeros_(out.weight)

    def memory(self, state: Tensor, count: Tensor, gamma: Tensor | None) -> Tensor:
        """The read's operand M^l/n [B, L, H, d, d] from the stored state [B, L, H, d, d] and count [B]."""
        return normalized_memory(state, count[:, None].expand(-1, state.shape[1]).float(), self.cfg.outer_phi, gamma)

    def forward(self, candidate_emb: Tensor, memory: Tensor) -> Tensor:
        """candidate_emb [B or 1, C, D], memory M/n [B, L, H, d, d] -> logit terms [B, C]."""
        c = self.cfg
        x = self.norm(candidate_emb)
        b = memory.shape[0]
        total = torch.zeros(b, candidate_emb.shape[1], device=memory.device, dtype=memory.dtype)
        for layer, (query, out) in enumerate(zip(self.query, self.out)):
            q = phi(query(x)).reshape(*x.shape[:-1], c.heads, c.head_dim).expand(b, -1, -1, -1)
            z = torch.einsum("bchd,bhde->bche", q, memory[:, layer]) * c.memory_read_scale
            total = total + (out(z.flatten(-2)) * x).sum(-1)
        return total
