"""The oracle of `target_attention`: the softmax attention `models.target.TargetAttentionLayer` runs."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def naive_target_attention(q: Tensor, k: Tensor, v: Tensor, token_mask: Tensor) -> Tensor:
    """q [B or 1, H, C, dh] candidates; k, v [B, H, S, dh] memory tokens; token_mask [B, S] (True: attend)
    -> [B, H, C, dh] in q's dtype, computed in fp32. Each candidate is its own query row: none mixes with another."""
    qf = q.float().expand(k.shape[0], -1, -1, -1)
    out = F.scaled_dot_product_attention(qf, k.float(), v.float(), attn_mask=token_mask[:, None, None, :])
    return out.to(q.dtype)
