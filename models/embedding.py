"""Event embedding: item [+ action] [+ log time-gap bucket]. Only the previous timestamp is needed."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.config import ModelConfig


def gap_buckets(timestamps: Tensor, prev_timestamps: Tensor, cfg: ModelConfig) -> Tensor:
    """bucket(log1p(max(0, ts - prev_ts))); prev_ts < 0 means "no previous event" (gap 0)."""
    gap = (timestamps - prev_timestamps).clamp(min=0).double()
    gap = torch.where(prev_timestamps < 0, torch.zeros_like(gap), gap)
    bucket = torch.floor(torch.log1p(gap) * cfg.gap_bucket_scale).long()
    return bucket.clamp(0, cfg.num_gap_buckets - 1)


class EventEmbedding(nn.Module):
    """x_t = E_item[item_t] + E_action[action_t] + E_gap[bucket_t] (the last two where the config turns them on)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.item = nn.Embedding(cfg.vocab_size, cfg.dim, padding_idx=0)
        self.action = nn.Embedding(cfg.num_actions, cfg.dim) if cfg.action_embedding else None
        self.gap = nn.Embedding(cfg.num_gap_buckets, cfg.dim) if cfg.gap_embedding else None
        nn.init.normal_(self.item.weight, std=cfg.item_init_std)
        with torch.no_grad():
            self.item.weight[0].zero_()
        for side in (self.action, self.gap):
            if side is not None:
                nn.init.normal_(side.weight, std=0.02)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, items: Tensor, actions: Tensor, timestamps: Tensor, last_ts: Tensor) -> Tensor:
        """items/actions/timestamps [B, T] (right-padded), last_ts [B] -> x [B, T, D]."""
        x = self.item(items)
        if self.action is not None:
            x = x + self.action(actions.clamp(0, self.cfg.num_actions - 1))
        if self.gap is not None:
            prev = torch.cat([last_ts[:, None], timestamps[:, :-1]], dim=1)
            x = x + self.gap(gap_buckets(timestamps, prev, self.cfg))
        return self.drop(x)
