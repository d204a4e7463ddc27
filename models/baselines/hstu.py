"""HSTU-style baseline (Zhai et al. 2024): causal pointwise SiLU attention over the full history.

Each layer: U, V, Q, K = SiLU(W x); A = SiLU(Q Kᵀ/√d + rab(i − j)) restricted to j ≤ i and divided
by the number of visible events (no softmax); y = W_o(LayerNorm(A V) ⊙ U); residual. Positions enter
only through a learned bias on log-bucketed distances, so any history length is scored the same way.
The user vector is the last position's output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from models.baselines.train import WindowedNextItem, known_items, right_aligned
from models.training.data import EncodedSequence
from models.training.evaluate import ScoreFn


class HSTUConfig(BaseModel):
    """Architecture; `max_len` caps the history only where quadratic attention would not fit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_items: int = Field(ge=1)
    max_len: int = Field(default=1024, ge=1, description="longest history attended to (ML-100K/Beauty: all of it)")
    dim: int = Field(default=64, ge=4)
    heads: int = Field(default=2, ge=1)
    layers: int = Field(default=2, ge=1)
    dropout: float = Field(default=0.2, ge=0, lt=1)
    distance_buckets: int = Field(default=32, ge=2, description="log-bucketed relative distances with a learned bias")
    init_std: float = Field(default=0.02, gt=0)


def bucket_of(distance: Tensor, buckets: int) -> Tensor:
    """Bucket of non-negative distances: exact for 0..7, then two buckets per doubling, capped."""
    d = distance.clamp(min=0).float()
    log_b = 8 + (torch.log(d.clamp(min=8) / 8) / math.log(2) * 2).floor()
    return torch.where(d < 8, d, log_b).long().clamp(max=buckets - 1)


def distance_bucket(t: int, buckets: int) -> Tensor:
    """[T, T] bucket of (i − j) (0 above the diagonal, which the causal mask hides anyway)."""
    return bucket_of(torch.arange(t)[:, None] - torch.arange(t)[None, :], buckets)


class HSTULayer(nn.Module):
    def __init__(self, cfg: HSTUConfig):
        super().__init__()
        self.heads, self.head_dim = cfg.heads, cfg.dim // cfg.heads
        self.norm_in = nn.LayerNorm(cfg.dim)
        self.uvqk = nn.Linear(cfg.dim, 4 * cfg.dim)
        self.norm_attn = nn.LayerNorm(cfg.dim)
        self.out = nn.Linear(cfg.dim, cfg.dim)
        self.rab = nn.Embedding(cfg.distance_buckets, cfg.heads)
        nn.init.zeros_(self.rab.weight)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, visible: Tensor, buckets: Tensor) -> Tensor:
        """x [B, T, D]; visible [B, T, T] (causal and real keys); buckets [T, T]."""
        b, t, _ = x.shape
        u, v, q, k = F.silu(self.uvqk(self.norm_in(x))).chunk(4, dim=-1)
        split = lambda z: z.view(b, t, self.heads, self.head_dim).transpose(1, 2)  # noqa: E731
        scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(self.head_dim)
        scores = scores + self.rab(buckets).permute(2, 0, 1)[None]
        vis = visible[:, None].float()
        attn = F.silu(scores) * vis / vis.sum(-1, keepdim=True).clamp(min=1)
        o = (attn @ split(v)).transpose(1, 2).reshape(b, t, -1)
        return x + self.drop(self.out(self.norm_attn(o) * u))


class HSTU(WindowedNextItem, nn.Module):
    def __init__(self, cfg: HSTUConfig):
        super().__init__()
        if cfg.dim % cfg.heads:
            raise ValueError(f"dim {cfg.dim} must be divisible by heads {cfg.heads}")
        self.cfg = cfg
        self.item = nn.Embedding(cfg.num_items + 1, cfg.dim, padding_idx=0)
        nn.init.normal_(self.item.weight, std=cfg.init_std)
        with torch.no_grad():
            self.item.weight[0].zero_()
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(HSTULayer(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.dim)

    def encode(self, items: Tensor) -> Tensor:
        """Right-aligned histories [B, T] -> hidden states [B, T, D]."""
        t = items.shape[1]
        real = items > 0
        visible = torch.ones(t, t, dtype=torch.bool).tril()[None] & real[:, None, :]
        buckets = distance_bucket(t, self.cfg.distance_buckets)
        x = self.drop(self.item(items))
        for layer in self.layers:
            x = layer(x, visible, buckets)
        return self.norm(x)

    # --- Baseline protocol -------------------------------------------------------------------
    def score_fn(self, chunk: int = 32) -> ScoreFn:
        n, num_items = self.cfg.max_len, self.cfg.num_items

        @torch.no_grad()
        def score(histories: list[EncodedSequence]) -> Tensor:
            parts = []
            for i in range(0, len(histories), chunk):  # T×T attention: bound memory on long histories
                items = right_aligned([known_items(h.items[-n:], num_items) for h in histories[i : i + chunk]])
                parts.append(self.encode(items)[:, -1])
            return torch.cat(parts) @ self.item.weight[1 : num_items + 1].T

        return score
