"""SIM-style baseline (Pi et al. 2020): search the history per candidate, then target attention.

General search unit: for each candidate, the top-k history events whose item embeddings are most
similar to it (inner product, no gradient through the search, as in SIM's soft search). Exact search
unit: target attention from the candidate over those k events (item embedding + a learned embedding of
how long ago it happened). A short-term term (mean of the last `recent` items) gives the
candidate-independent part. score(c) = e_c · (W_o attn_c + W_s short).

Full ranking scores every item, so the work is candidate-chunked: memory is [B, chunk, L].
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from models.baselines.hstu import bucket_of
from models.baselines.train import LossContext, known_items, right_aligned
from models.training.data import EncodedSequence
from models.training.evaluate import ScoreFn


class SIMConfig(BaseModel):
    """Architecture and training-sample knobs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_items: int = Field(ge=1)
    dim: int = Field(default=64, ge=4)
    top_k: int = Field(default=32, ge=1, description="history events retrieved per candidate")
    max_history: int = Field(default=2000, ge=1, description="history events searched (the most recent)")
    recent: int = Field(default=20, ge=1, description="last items averaged into the short-term term")
    age_buckets: int = Field(default=32, ge=2)
    cut_points: int = Field(default=8, ge=1, description="training positions sampled per sequence per epoch")
    dropout: float = Field(default=0.2, ge=0, lt=1)
    init_std: float = Field(default=0.02, gt=0)
    candidate_chunk: int = Field(default=256, ge=1, description="candidates scored at once in full ranking")


class SIM(nn.Module):
    def __init__(self, cfg: SIMConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.item = nn.Embedding(cfg.num_items + 1, d, padding_idx=0)
        nn.init.normal_(self.item.weight, std=cfg.init_std)
        with torch.no_grad():
            self.item.weight[0].zero_()
        self.age = nn.Embedding(cfg.age_buckets, d)
        nn.init.normal_(self.age.weight, std=cfg.init_std)
        self.w_q, self.w_k, self.w_v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.w_o, self.w_s = nn.Linear(d, d), nn.Linear(d, d)
        self.drop = nn.Dropout(cfg.dropout)

    def _history(self, items: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Right-aligned history [B, L] -> (item embeddings, keys, values, short-term vector)."""
        b, length = items.shape
        emb = self.drop(self.item(items))
        ages = self.age(bucket_of(torch.arange(length - 1, -1, -1), self.cfg.age_buckets))  # [L, D], from the end
        tokens = emb + ages[None]
        recent = items[:, -self.cfg.recent :] > 0
        short = (emb[:, -self.cfg.recent :] * recent[..., None]).sum(1) / recent.sum(1, keepdim=True).clamp(min=1)
        return emb, self.w_k(tokens), self.w_v(tokens), self.w_s(short)

    def _logits(self, cand: Tensor, items: Tensor, emb: Tensor, keys: Tensor, values: Tensor, short: Tensor) -> Tensor:
        """cand [B, C] item rows -> logits [B, C]."""
        e_c = self.item(cand)  # [B, C, D]
        real = items > 0  # [B, L]
        with torch.no_grad():  # general search unit: top-k by embedding similarity
            # ties (a repeated item) go to the most recent copy, the same whatever the padding
            recency = -1e-7 * torch.arange(items.shape[1] - 1, -1, -1, dtype=emb.dtype)
            sim = (e_c @ emb.transpose(1, 2) + recency).masked_fill(~real[:, None], float("-inf"))  # [B, C, L]
            k = min(self.cfg.top_k, items.shape[1])
            top = sim.topk(k, dim=-1).indices
            chosen = torch.zeros_like(sim, dtype=torch.bool).scatter_(-1, top, True) & real[:, None]
        att = (self.w_q(e_c) @ keys.transpose(1, 2)) / math.sqrt(self.cfg.dim)
        att = att.masked_fill(~chosen, float("-inf")).softmax(-1).nan_to_num(0.0)  # empty history: zero
        user = self.w_o(att @ values) + short[:, None]
        return (e_c * user).sum(-1)

    # --- Baseline protocol -------------------------------------------------------------------
    def examples(self, train: list[EncodedSequence]) -> list[tuple[Tensor, Tensor]]:
        """(items, the positions that are training targets) per sequence."""
        return [(known_items(s.items, self.cfg.num_items), torch.nonzero(s.learnable()[1:]).flatten() + 1)
                for s in train]

    def example_length(self, example: tuple[Tensor, Tensor]) -> int:
        return min(len(example[0]), self.cfg.max_history)

    def loss(self, batch: list[tuple[Tensor, Tensor]], ctx: LossContext) -> Tensor:
        """Sampled softmax (logQ-corrected shared negatives) at random cut points among each sequence's targets."""
        hists, targets = [], []
        for items, positions in batch:
            cuts = positions[torch.randint(0, len(positions), (self.cfg.cut_points,), generator=ctx.generator)]
            for t in cuts.tolist():
                if items[t] > 0:
                    hists.append(items[max(0, t - self.cfg.max_history) : t])
                    targets.append(int(items[t]))
        items = right_aligned(hists)
        tgt = torch.tensor(targets)
        neg, neg_logq = ctx.sampler.sample(ctx.cfg.negatives)
        cand = torch.cat([tgt[:, None], neg[None].expand(len(tgt), -1)], 1)
        logq = torch.cat([ctx.sampler.log_q(tgt)[:, None], neg_logq[None].expand(len(tgt), -1)], 1)
        logits = self._logits(cand, items, *self._history(items)) - logq
        logits[:, 1:] = logits[:, 1:].masked_fill(neg[None] == tgt[:, None], float("-inf"))
        return nn.functional.cross_entropy(logits, torch.zeros(len(tgt), dtype=torch.long))

    def score_fn(self) -> ScoreFn:
        cfg = self.cfg

        @torch.no_grad()
        def score(histories: list[EncodedSequence]) -> Tensor:
            out = []
            for i in range(0, len(histories), 32):
                items = right_aligned([known_items(h.items[-cfg.max_history :], cfg.num_items)
                                       for h in histories[i : i + 32]])
                state = self._history(items)
                cols = []
                for c0 in range(1, cfg.num_items + 1, cfg.candidate_chunk):
                    cand = torch.arange(c0, min(c0 + cfg.candidate_chunk, cfg.num_items + 1))
                    cols.append(self._logits(cand[None].expand(len(items), -1), items, *state))
                out.append(torch.cat(cols, 1))
            return torch.cat(out)

        return score
