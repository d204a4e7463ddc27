"""SASRec (Kang & McAuley 2018): causal softmax self-attention over the last N items.

Learned absolute positions over a right-aligned window of N slots, pre-LN transformer blocks,
tied item embeddings for the output. Trained on every position of every training sequence:
a long sequence is cut into consecutive windows of N inputs (each sees only its own window, as
at serving time the model sees only the last N items).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from models.baselines.train import WindowedNextItem, known_items, right_aligned
from models.training.data import EncodedSequence
from models.training.evaluate import ScoreFn


class SASRecConfig(BaseModel):
    """Architecture; defaults follow the paper / RecBole (2 blocks, dim 64, window 50)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_items: int = Field(ge=1)
    max_len: int = Field(default=50, ge=1, description="window N: the model sees only the last N items")
    dim: int = Field(default=64, ge=4)
    heads: int = Field(default=2, ge=1)
    layers: int = Field(default=2, ge=1)
    ffn_mult: int = Field(default=4, ge=1)
    dropout: float = Field(default=0.2, ge=0, lt=1)
    init_std: float = Field(default=0.02, gt=0)


class SASRec(WindowedNextItem, nn.Module):
    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        self.cfg = cfg
        self.item = nn.Embedding(cfg.num_items + 1, cfg.dim, padding_idx=0)
        self.pos = nn.Embedding(cfg.max_len, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, cfg.ffn_mult * cfg.dim, cfg.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)
        for emb in (self.item, self.pos):
            nn.init.normal_(emb.weight, std=cfg.init_std)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def encode(self, items: Tensor) -> Tensor:
        """Right-aligned item windows [B, T] (0 = padding, T <= max_len) -> hidden states [B, T, D]."""
        b, t = items.shape
        slots = torch.arange(self.cfg.max_len - t, self.cfg.max_len)
        x = self.drop(self.item(items) + self.pos(slots)[None])
        pad = items == 0
        blocked = torch.ones(t, t, dtype=torch.bool).triu(1)[None] | pad[:, None, :]  # [B, T, T]
        blocked = blocked & ~torch.eye(t, dtype=torch.bool)[None]  # a padded query attends to itself: no NaN rows
        mask = torch.zeros(b, t, t).masked_fill(blocked, float("-inf"))
        mask = mask.repeat_interleave(self.cfg.heads, dim=0)
        return self.norm(self.blocks(x, mask=mask))

    # --- Baseline protocol -------------------------------------------------------------------
    def score_fn(self) -> ScoreFn:
        n, num_items = self.cfg.max_len, self.cfg.num_items

        @torch.no_grad()
        def score(histories: list[EncodedSequence]) -> Tensor:
            items = right_aligned([known_items(h.items[-n:], num_items) for h in histories])
            user = self.encode(items)[:, -1]
            return user @ self.item.weight[1 : num_items + 1].T

        return score
