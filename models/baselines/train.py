"""Training of every neural baseline under the same rules as VISTA: the shared budget (models/training/budget.py)
and the shared early-stopping loop (models/training/loop.py), nothing from VISTA's own trainer.

A baseline implements the small `Baseline` protocol below; `train_baseline` owns the optimizer and
hands its steps to the shared loop, which owns the time budget, validation (NDCG@10 on the validation
cases, never test) and restoring the best weights.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from pydantic import BaseModel
from safetensors.torch import save_file
from torch import Tensor, nn

from models.training.budget import BudgetConfig, NegativeSampler, length_buckets, optimizer_step, start_run
from models.training.data import EncodedSequence, LeaveOneOut
from models.training.evaluate import ScoreFn
from models.training.loop import fit, validation


class BaselineTrainConfig(BudgetConfig):
    """The shared budget rules (the baselines add nothing of their own)."""


@dataclass
class LossContext:
    """What a baseline's loss needs besides its batch."""

    cfg: BaselineTrainConfig
    num_items: int
    sampler: NegativeSampler
    generator: torch.Generator


class Baseline(Protocol):
    """The contract between a baseline model and `train_baseline`."""

    def examples(self, train: list[EncodedSequence]) -> list[Any]: ...

    def example_length(self, example: Any) -> int: ...

    def loss(self, batch: list[Any], ctx: LossContext) -> Tensor: ...

    def score_fn(self) -> ScoreFn: ...


def known_items(items: Tensor, num_items: int) -> Tensor:
    """OOV bucket rows (> num_items) become padding: baselines have no embedding for them."""
    return items.masked_fill(items > num_items, 0)


def right_aligned(seqs: list[Tensor], width: int | None = None) -> Tensor:
    """[B, T] with each row's last `T` entries at the right edge, zero (padding) on the left."""
    t = width if width is not None else max((len(s) for s in seqs), default=1)
    t = max(t, 1)
    out = torch.zeros(len(seqs), t, dtype=torch.long)
    for row, s in enumerate(seqs):
        s = s[-t:]
        if len(s):
            out[row, t - len(s):] = s
    return out


def next_item_loss(hidden: Tensor, targets: Tensor, item_table: Tensor, ctx: LossContext) -> Tensor:
    """Cross-entropy of next-item prediction from user vectors [P, D]: full softmax over all known items
    when the catalog is small enough, else sampled softmax over shared negatives with logQ correction."""
    if ctx.num_items <= ctx.cfg.full_softmax_max_items:
        return F.cross_entropy(hidden @ item_table[1 : ctx.num_items + 1].T, targets - 1)
    neg, neg_logq = ctx.sampler.sample(ctx.cfg.negatives)
    pos = (hidden * item_table[targets]).sum(-1, keepdim=True) - ctx.sampler.log_q(targets)[:, None]
    negs = (hidden @ item_table[neg].T - neg_logq[None]).masked_fill(neg[None] == targets[:, None], float("-inf"))
    return F.cross_entropy(torch.cat([pos, negs], 1), torch.zeros_like(targets))


class WindowedNextItem:
    """Training protocol shared by the sequence encoders (SASRec, HSTU-style): every position of a training
    sequence predicts its next item, sequences cut into windows of `cfg.max_len` only where longer.
    The host class provides `cfg.max_len`, `cfg.num_items`, `encode(items) -> hidden` and `item` (embedding)."""

    def examples(self, train: list[EncodedSequence]) -> list[tuple[Tensor, Tensor]]:
        """(inputs, next items) windows of up to max_len positions covering every position once; a position
        that is not a training target (`EncodedSequence.learn`) has next item 0, and windows without any are left out."""
        n = self.cfg.max_len
        out = []
        for s in train:
            items = known_items(s.items, self.cfg.num_items)
            targets = items.masked_fill(~s.learnable(), 0)  # 0: not a training target (the return objective)
            for end in range(len(items) - 1, 0, -n):
                start = max(0, end - n)
                if bool(targets[start + 1 : end + 1].any()):
                    out.append((items[start:end], targets[start + 1 : end + 1]))
        return out

    def example_length(self, example: tuple[Tensor, Tensor]) -> int:
        return len(example[0])

    def loss(self, batch: list[tuple[Tensor, Tensor]], ctx: LossContext) -> Tensor:
        inputs = right_aligned([x for x, _ in batch])
        targets = right_aligned([y for _, y in batch], inputs.shape[1])
        hidden = self.encode(inputs)
        keep = (inputs > 0) & (targets > 0)
        return next_item_loss(hidden[keep], targets[keep], self.item.weight, ctx)


def save_weights(directory: str | Path, model: nn.Module, config: BaseModel, meta: dict) -> None:
    """safetensors weights + JSON config/meta (no pickle)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(config.model_dump_json(indent=2))
    (out / "meta.json").write_text(json.dumps(meta, indent=2, default=str))


def train_baseline(
    model: nn.Module,
    split: LeaveOneOut,
    num_items: int,
    tcfg: BaselineTrainConfig,
    *,
    log: Callable[[dict], None] = print,
    checkpoint: Callable[[nn.Module, dict], None] | None = None,
) -> dict:
    """Train with early stopping on validation NDCG@10 (never test); restores the best weights.

    Returns epochs, training time, the best validation metrics and the per-validation history.
    """
    run = start_run(model, split, num_items, tcfg)
    ctx = LossContext(tcfg, num_items, run.sampler, run.generator)
    examples = model.examples(run.train)
    if not examples:
        raise ValueError("no training examples: every training sequence is shorter than 2 events")

    def step(batch: list[Any]) -> dict[str, float]:
        loss = model.loss(batch, ctx)
        optimizer_step(model, run.opt, loss)
        return {"loss": loss.item()}

    return fit(model, lambda: length_buckets(examples, tcfg.batch_size, run.shuffler, model.example_length), step,
               validation(model.score_fn, split, num_items, tcfg), tcfg, log=log, checkpoint=checkpoint)
