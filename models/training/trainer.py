"""VISTA's training: its config (the shared budget rules plus the design note's window, cut-point and
loss knobs), its optimizer step, and `train_vista`, which wires VISTA's loss and validation into the
shared early-stopping loop (models/training/loop.py)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field

from kernels.dispatch import BACKEND_HELP, BackendChoice, resolve_backend
from models.training.budget import BudgetConfig, NegativeSampler, length_buckets, optimizer_step, start_run
from models.training.data import EncodedSequence, LeaveOneOut
from models.training.evaluate import vista_score_fn
from models.training.loop import fit, validation
from models.training.losses import batch_loss
from models.training.tiles import Tile, tiles
from models.vista import VistaModel
from models.vocab import ItemVocab


class TrainConfig(BudgetConfig):
    """VISTA's training: the shared budget rules plus the history-window, cut-point and loss knobs of the
    design note. The defaults are the `general` preset's (models/presets/general.yaml)."""

    epochs: int = Field(default=200, ge=1)
    time_budget_s: float = Field(default=300.0, gt=0, description="stop after this much training time")
    backend: BackendChoice = Field(default="auto", description=BACKEND_HELP)
    batch_size: int = Field(default=16, ge=1, description="16 on ML-100K: 4x the optimizer steps of 64 in the "
                            "same time; the large-catalog presets use 128")
    lr: float = Field(default=2e-3, gt=0)
    patience: int = Field(default=10, ge=1, description="validations without improvement before stopping")
    window: int = Field(default=64, ge=2, description="gradient window; earlier events go through the state only")
    window_end: Literal["last", "tiles"] = Field(default="last", description="which gradient windows train: each "
                                                  "sequence's last one (its prefix folded each step), or `tiles`: "
                                                  "every window of every sequence once per epoch, their states "
                                                  "refreshed once per epoch (long histories; models/training/tiles.py)")
    cut_points: int = Field(default=2, ge=1, description="positions per sequence where seeds + target attention train")
    cut_last: bool = Field(default=False, description="one cut point is always each sequence's last position (else "
                           "all are uniform; ablation switch): the last one is the same training example every "
                           "epoch, which the target branch memorized on the lifelong world")
    cut_every: int = Field(default=4, ge=1, description="the cut-point losses (target attention + reconstruction) "
                           "run on every this-many-th step only; the other steps train the history stack alone "
                           "(its sequence loss), at its cost: the target branch scores every candidate per cut "
                           "and costs ~9-12x the stack's step")
    lambda_rec: float = Field(default=1.0, ge=0, description="weight of the generative reconstruction loss")
    cut_detach_state: bool = Field(default=True, description="cut loss reads a stop-gradient history state "
                                   "(M and recent h^L): only the sequence loss shapes the history stack's outputs "
                                   "(ablation switch: through the state, ML-100K validation fell 0.082 -> 0.063)")
    cut_detach_items: bool = Field(default=True, description="the cut loss's candidates and reconstruction targets "
                                   "are stop-gradient item embeddings (with cut_detach_state, only the sequence "
                                   "loss shapes the item table; ablation switch)")
    rerank_top: int | None = Field(default=None, ge=1, description="validation and test rank the catalog as a "
                                   "cascade: the sequence readout u·e retrieves the top N, the whole model reorders "
                                   "them (None: the whole model scores every item; see evaluate.vista_score_fn)")
    cut_negatives: int | None = Field(default=None, ge=1, description="score the cut loss against this many shared "
                                      "sampled negatives (logQ-corrected) even when the catalog fits a full softmax: "
                                      "every candidate costs a target attention over K + R tokens, so the full "
                                      "catalog makes the cut loss most of an epoch's time (None: full softmax)")


def train_step(model: VistaModel, batch: list[EncodedSequence], sampler: NegativeSampler, tcfg: TrainConfig,
               num_items: int, generator: torch.Generator, opt: torch.optim.Optimizer, *,
               with_cut: bool = True) -> dict[str, float]:
    """One optimizer step on one batch (loss, backward, gradient clipping, update); returns the loss parts.

    Parameters without a gradient this step (the target branch on a `with_cut=False` step) are left as they
    are: AdamW skips them, moments included."""
    loss, logs = batch_loss(model, batch, sampler, tcfg, num_items, generator, with_cut=with_cut)
    optimizer_step(model, opt, loss)
    return logs


def train_vista(
    model: VistaModel,
    vocab: ItemVocab,
    split: LeaveOneOut,
    tcfg: TrainConfig,
    *,
    log: Callable[[dict], None] = print,
    checkpoint: Callable[[VistaModel, dict], None] | None = None,
) -> dict:
    """Train with early stopping on validation NDCG@10 (never test); restores the best weights.

    The cut-point losses run on every `cut_every`-th optimizer step, counted across epochs.
    Returns a summary dict (epochs, time, best validation metrics, per-epoch history).
    """
    num_items = len(vocab)
    model.backend = resolve_backend(tcfg.backend, model.device, model.cfg.head_dim)
    run = start_run(model, split, num_items, tcfg)
    random.seed(tcfg.seed)  # VISTA has always seeded Python's global RNG too (the baselines leave it alone)
    steps = itertools.count()

    def step(batch: list[EncodedSequence]) -> dict[str, float]:
        with_cut = next(steps) % tcfg.cut_every == 0
        return train_step(model, batch, run.sampler, tcfg, num_items, run.generator, run.opt, with_cut=with_cut)

    validate = validation(lambda: vista_score_fn(model, vocab, rerank_top=tcfg.rerank_top), split, num_items, tcfg)

    def batches() -> list[list[EncodedSequence]] | list[list[Tile]]:
        examples = tiles(model, run.train, tcfg.window) if tcfg.window_end == "tiles" else run.train
        return length_buckets(examples, tcfg.batch_size, run.shuffler)

    return fit(model, batches, step, validate, tcfg, log=log, checkpoint=checkpoint)
