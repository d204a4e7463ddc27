"""Batched per-user state and event containers shared by the model, the stream worker and the backfill."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass
class UserStates:
    """Recurrent state of B users: everything an incremental update needs, nothing more.

    memory:        [B, L, H, d, d] fp32 — per-layer QLA sums M^l.
    count:         [B] int64 — events applied (N); the normalizer is derived from it.
    last_ts:       [B] int64 — timestamp of the newest applied event (-1: none yet).
    recent_items:  [B, R] int64 — item rows of the last R events, newest last; 0 = empty slot.
    recent_h:      [B, R, D] fp32 — their top-layer outputs h^L, rounded to fp16 as stored.
    """

    memory: Tensor
    count: Tensor
    last_ts: Tensor
    recent_items: Tensor
    recent_h: Tensor

    @property
    def batch_size(self) -> int:
        return self.count.shape[0]

    @property
    def recent_mask(self) -> Tensor:
        return self.recent_items > 0

    def select(self, index: Tensor) -> "UserStates":
        """Rows `index` (a long tensor) of every field."""
        return UserStates(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to(self, device: torch.device | str) -> "UserStates":
        return UserStates(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @staticmethod
    def cat(parts: list["UserStates"]) -> "UserStates":
        return UserStates(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(UserStates)})


@dataclass
class EventBatch:
    """Events of B users, packed user after user (ragged); each user's events in arrival order.

    items:      [N] int64 item rows (already mapped through the vocabulary).
    actions:    [N] int64 action / rating ids.
    timestamps: [N] int64 seconds.
    lengths:    [B] int64 events per user (may be 0); sums to N.
    """

    items: Tensor
    actions: Tensor
    timestamps: Tensor
    lengths: Tensor

    def __post_init__(self) -> None:
        n = self.items.shape[0]
        if self.actions.shape[0] != n or self.timestamps.shape[0] != n:
            raise ValueError("items, actions and timestamps must have the same length")
        if int(self.lengths.sum()) != n:
            raise ValueError(f"lengths sum to {int(self.lengths.sum())} but there are {n} events")
        if bool((self.lengths < 0).any()):
            raise ValueError("lengths must be >= 0")

    @property
    def batch_size(self) -> int:
        return self.lengths.shape[0]

    @property
    def cu_seqlens(self) -> Tensor:
        return torch.cat([self.lengths.new_zeros(1), self.lengths.cumsum(0)])

    @classmethod
    def from_sequences(cls, sequences: list[tuple[list[int], list[int], list[int]]]) -> "EventBatch":
        """From per-user (items, actions, timestamps) lists."""
        items = [i for s in sequences for i in s[0]]
        actions = [a for s in sequences for a in s[1]]
        stamps = [t for s in sequences for t in s[2]]
        lengths = [len(s[0]) for s in sequences]
        return cls(torch.tensor(items, dtype=torch.long), torch.tensor(actions, dtype=torch.long),
                   torch.tensor(stamps, dtype=torch.long), torch.tensor(lengths, dtype=torch.long))

    def padded(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Right-padded [B, T] items, actions, timestamps and the [B, T] validity mask."""
        b = self.batch_size
        t_max = int(self.lengths.max()) if b else 0
        mask = torch.arange(t_max, device=self.items.device)[None, :] < self.lengths[:, None]
        out = []
        for src in (self.items, self.actions, self.timestamps):
            dst = src.new_zeros(b, t_max)
            dst[mask] = src
            out.append(dst)
        return out[0], out[1], out[2], mask
