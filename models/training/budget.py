"""The training rules every model family shares (VISTA and the baselines): budget, optimizer, seeds,
shared negatives and length-bucketed batches. Nothing here is VISTA-specific, so a baseline trains
under exactly the same rules without importing VISTA's trainer."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from models.training.data import EncodedSequence, LeaveOneOut, with_objective_targets

T = TypeVar("T")


class BudgetConfig(BaseModel):
    """Budget, optimization and early-stopping knobs every model family trains under (one set of rules)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=200, ge=1)
    time_budget_s: float = Field(default=600.0, gt=0, description="stop after this much training time")
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    negatives: int = Field(default=256, ge=1, description="shared sampled negatives (logQ-corrected) when no full softmax")
    full_softmax_max_items: int = Field(default=5000, ge=1, description="full softmax up to this catalog size")
    eval_users: int = Field(default=1000, ge=1, description="validation users per epoch (early stopping)")
    patience: int = Field(default=5, ge=1, description="validations without improvement before stopping")
    eval_every: int = Field(default=1, ge=1, description="validate every this many epochs (and always at the last "
                            "one): validation is inside the wall-clock budget, and a model whose full-catalog "
                            "scoring is slow spends less of its budget on it")
    exclude_seen: bool = Field(default=True, description="the evaluation protocol: rank the held-out item among the "
                               "items the user has not consumed (True), or among every item (False: re-consumption "
                               "data, where the masked protocol gives the target away)")
    return_gap: int | None = Field(default=None, ge=1, description="the return objective: train only on targets "
                                   "that are returns, items consumed before but not in the last `return_gap` "
                                   "events (None: every next item). For re-engagement, where the held-out items "
                                   "are such returns: plain next-item training there is ~97% 'continue the current "
                                   "trend' (the lifelong world, docs/quality.md)")
    session_gap_s: int | None = Field(default=None, ge=0, description="the next-visit objective: train only on "
                                      "targets that start a session, more than this many seconds after the event "
                                      "before (combined with `return_gap` when both are set). Within a session the "
                                      "next item continues its topic; what a user comes back for is decided at the "
                                      "session's start, where a held-out return sits (the lifelong world)")
    min_epochs: int = Field(default=1, ge=1, description="early stopping never stops before this many epochs")
    seed: int = 0
    threads: int | None = Field(default=None, description="torch CPU threads (None: torch's default)")

    def validates_after(self, epoch: int, out_of_time: bool) -> bool:
        """Whether this epoch ends with a validation: every `eval_every`-th, the last, or when time is up."""
        return epoch % self.eval_every == 0 or out_of_time or epoch == self.epochs


class NegativeSampler:
    """Draws shared negatives from 0.5·uniform + 0.5·popularity and returns their log-probabilities."""

    def __init__(self, train: list[EncodedSequence], num_items: int, generator: torch.Generator):
        counts = torch.ones(num_items)
        for s in train:
            rows = s.items[(s.items >= 1) & (s.items <= num_items)] - 1
            counts.index_add_(0, rows, torch.ones(rows.numel()))
        self.probs = 0.5 / num_items + 0.5 * counts / counts.sum()
        self.log_probs = self.probs.log()
        self.generator = generator

    def sample(self, n: int) -> tuple[Tensor, Tensor]:
        idx = torch.multinomial(self.probs, n, replacement=True, generator=self.generator)
        return idx + 1, self.log_probs[idx]

    def log_q(self, rows: Tensor) -> Tensor:
        return self.log_probs[(rows - 1).clamp(0, self.probs.numel() - 1)]


def length_buckets(examples: Sequence[T], batch_size: int, rng: random.Random,
                   length: Callable[[T], int] = len) -> list[list[T]]:
    """Shuffled batches of similar length: padding to the longest row of a batch is the scan's main waste.

    Examples are shuffled, sorted by `length` within windows of 16 batches, cut into batches, and
    the batches shuffled, so every epoch still sees a different mix.
    """
    order = list(examples)
    rng.shuffle(order)
    window = 16 * batch_size
    batches = []
    for start in range(0, len(order), window):
        block = sorted(order[start : start + window], key=length)
        batches.extend(block[i : i + batch_size] for i in range(0, len(block), batch_size))
    rng.shuffle(batches)
    return batches


@dataclass
class TrainingRun:
    """The seeded pieces one training run draws from, built the same way for every family."""

    train: list[EncodedSequence]  # the training sequences with a next item to predict
    sampler: NegativeSampler
    generator: torch.Generator  # negatives and any other in-step sampling
    shuffler: random.Random  # batch order
    opt: torch.optim.Optimizer


def start_run(model: nn.Module, split: LeaveOneOut, num_items: int, cfg: BudgetConfig) -> TrainingRun:
    """Threads, seeds, training sequences, shared negatives and AdamW of one run.

    One place, so that every family draws its dropout, negatives and batch order from the same seeds."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    train = with_objective_targets(split.train, cfg.return_gap, cfg.session_gap_s)
    train = [s for s in train if bool(s.learnable()[1:].any())]  # sequences with a next item to learn
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return TrainingRun(train, NegativeSampler(train, num_items, gen), gen, random.Random(cfg.seed), opt)


def optimizer_step(model: nn.Module, opt: torch.optim.Optimizer, loss: Tensor) -> None:
    """Backward, gradient clipping at norm 1 and one update.

    Parameters without a gradient this step are left as they are: AdamW skips them, moments included."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
