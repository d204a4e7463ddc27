"""Ranking metrics from the 0-based rank of the held-out item, and personalization diagnostics."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def target_ranks(scores: Tensor, targets: Tensor) -> Tensor:
    """0-based rank of each row's target among its scores (ties count against the target)."""
    target_scores = scores.gather(1, targets[:, None])
    return (scores > target_scores).sum(1) + ((scores == target_scores).sum(1) - 1)


def ranking_metrics(ranks: Tensor, ks: tuple[int, ...] = (1, 5, 10, 20)) -> dict[str, float]:
    """HR@k, NDCG@k (one relevant item: 1/log2(rank+2) if rank < k) and MRR."""
    r = ranks.double()
    out: dict[str, float] = {}
    for k in ks:
        hit = (r < k).double()
        out[f"HR@{k}"] = hit.mean().item()
        out[f"NDCG@{k}"] = (hit / torch.log2(r + 2)).mean().item()
    out["MRR"] = (1.0 / (r + 1)).mean().item()
    out["users"] = int(ranks.numel())
    return out


def personalization(scores: Tensor, top_k: int = 10) -> dict[str, float]:
    """Share of (user-centered) logit variance that is across users, and distinct items in top-k lists.

    A model that gives every user the same list has share ~0 and ~top_k distinct items, whatever its HR.
    """
    centered = scores - scores.mean(dim=1, keepdim=True)
    total = centered.var(unbiased=False).item()
    across = centered.var(dim=0, unbiased=False).mean().item()
    top = scores.topk(min(top_k, scores.shape[1]), dim=1).indices
    return {"across_user_variance_share": across / total if total > 0 and not math.isnan(total) else 0.0,
            f"distinct_top{top_k}_items": int(top.unique().numel()), "users": int(scores.shape[0])}
