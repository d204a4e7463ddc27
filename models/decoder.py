"""Generative reconstruction decoder (paper's auxiliary loss): rebuild history items from the seeds."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.config import ModelConfig


class ReconstructionDecoder(nn.Module):
    """A one-layer causal decoder that cross-attends to the seeds and predicts each history item's
    embedding from the previous ones; MSE against the (detached) item embeddings."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.start = nn.Parameter(torch.zeros(cfg.dim))
        self.position = nn.Parameter(torch.randn(cfg.recon_window, cfg.dim) * 0.02)
        self.layer = nn.TransformerDecoderLayer(cfg.dim, cfg.heads, dim_feedforward=2 * cfg.dim, dropout=0.0,
                                                batch_first=True, norm_first=True)
        self.head = nn.Linear(cfg.dim, cfg.dim)

    def loss(self, seeds: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
        """seeds [N, K, D]; targets [N, W, D] item embeddings of the W events up to a cut; mask [N, W]."""
        n, w, _ = targets.shape
        targets = targets.detach()
        inputs = torch.cat([self.start.expand(n, 1, -1), targets[:, :-1]], dim=1) + self.position[:w]
        causal = torch.triu(torch.full((w, w), float("-inf"), device=seeds.device), diagonal=1)
        hidden = self.layer(inputs, seeds, tgt_mask=causal)
        err = F.mse_loss(self.head(hidden), targets, reduction="none").mean(-1)
        return (err * mask).sum() / mask.sum().clamp(min=1)
