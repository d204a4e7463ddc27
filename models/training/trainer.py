"""Training of VISTA as the design note says: whole history through the state, gradient window,
cut points for the seeds + target attention, sampled softmax with logQ, reconstruction loss."""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor
from tqdm import tqdm

from models.state import UserStates
from models.training.data import EncodedSequence, LeaveOneOut, to_batch
from models.training.evaluate import evaluate, vista_score_fn
from models.vista import VistaModel
from models.vocab import ItemVocab


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
    seed: int = 0
    threads: int | None = Field(default=None, description="torch CPU threads (None: torch's default)")

    def validates_after(self, epoch: int, out_of_time: bool) -> bool:
        """Whether this epoch ends with a validation: every `eval_every`-th, the last, or when time is up."""
        return epoch % self.eval_every == 0 or out_of_time or epoch == self.epochs


class TrainConfig(BudgetConfig):
    """VISTA's training: the shared budget rules plus the history-window, cut-point and loss knobs of the
    design note. The defaults are the `general` preset's (models/presets/general.yaml)."""

    epochs: int = Field(default=200, ge=1)
    time_budget_s: float = Field(default=300.0, gt=0, description="stop after this much training time")
    batch_size: int = Field(default=16, ge=1, description="16 on ML-100K: 4x the optimizer steps of 64 in the "
                            "same time; the large-catalog presets use 128")
    lr: float = Field(default=2e-3, gt=0)
    patience: int = Field(default=10, ge=1, description="validations without improvement before stopping")
    window: int = Field(default=64, ge=2, description="gradient window; earlier events go through the state only")
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


def length_buckets(seqs: list[EncodedSequence], batch_size: int, rng: random.Random) -> list[list[EncodedSequence]]:
    """Shuffled batches of similar length: padding to the longest row of a batch is the scan's main waste.

    Sequences are shuffled, sorted by length within windows of 16 batches, cut into batches, and
    the batches shuffled, so every epoch still sees a different mix.
    """
    order = seqs[:]
    rng.shuffle(order)
    window = 16 * batch_size
    batches = []
    for start in range(0, len(order), window):
        block = sorted(order[start : start + window], key=len)
        batches.extend(block[i : i + batch_size] for i in range(0, len(block), batch_size))
    rng.shuffle(batches)
    return batches


def _cut_positions(lengths: Tensor, count: int, generator: torch.Generator, include_last: bool = True) -> Tensor:
    """[B, C] positions per row, uniform over each row's positions; the last one always included if asked."""
    rand = torch.rand(lengths.shape[0], count - int(include_last), generator=generator)
    cuts = (rand * lengths[:, None].float()).long().clamp(max=(lengths - 1)[:, None])
    if include_last:
        cuts = torch.cat([cuts, (lengths - 1)[:, None]], dim=1)
    return cuts.clamp(min=0)


def _gather_time(prefix: Tensor, window: Tensor, ends: Tensor, width: int) -> Tensor:
    """From [prefix (width slots) ; window] take the `width` entries ending at window position ends [B, C]."""
    full = torch.cat([prefix, window], dim=1)
    idx = ends[..., None] + 1 + torch.arange(width)[None, None, :]  # [B, C, width] in `full` coordinates
    b, c = ends.shape
    flat = idx.reshape(b, -1)
    if full.dim() == 2:
        return torch.gather(full, 1, flat).reshape(b, c, width)
    out = torch.gather(full, 1, flat[..., None].expand(-1, -1, full.shape[-1]))
    return out.reshape(b, c, width, full.shape[-1])


def batch_loss(model: VistaModel, seqs: list[EncodedSequence], sampler: NegativeSampler, tcfg: TrainConfig,
               num_items: int, generator: torch.Generator, *, with_cut: bool = True) -> tuple[Tensor, dict[str, float]]:
    """Loss of one batch of training sequences (each predicts its own next items).

    with_cut False: the sequence loss alone (a step between two `cut_every` steps), no cut states materialized.
    """
    cfg = model.cfg
    prefixes, windows, targets = [], [], []
    for s in seqs:
        inputs_len = len(s) - 1
        start = max(0, inputs_len - tcfg.window)
        prefixes.append(s.slice(start))
        windows.append(s.slice(inputs_len, start))
        targets.append(s.items[start + 1 :])
    states: UserStates = model.update(model.init_state(len(seqs)), to_batch(prefixes))
    batch = to_batch(windows)
    lengths = batch.lengths
    with_cut = cfg.target_readout and (with_cut or not cfg.sequence_readout)  # some loss must remain
    cuts = _cut_positions(lengths, tcfg.cut_points, generator, tcfg.cut_last) if with_cut else None
    out = model.scan(batch, states, state_positions=cuts)
    mask = out.mask
    target_pad = torch.zeros_like(mask, dtype=torch.long)
    target_pad[mask] = torch.cat(targets)
    item_table = model.embedding.item.weight
    logs: dict[str, float] = {}
    total = torch.zeros(())

    if cfg.sequence_readout:
        u = model.scorer.user_vector(out.hidden[mask])  # [P, D]
        tgt = target_pad[mask]
        if num_items <= tcfg.full_softmax_max_items:
            logits = u @ item_table[1 : num_items + 1].T
            seq_loss = F.cross_entropy(logits, tgt - 1)
        else:
            neg, neg_logq = sampler.sample(tcfg.negatives * 4)
            pos_logit = (u * item_table[tgt]).sum(-1, keepdim=True) - sampler.log_q(tgt)[:, None]
            neg_logit = u @ item_table[neg].T - neg_logq[None]
            neg_logit = neg_logit.masked_fill(neg[None] == tgt[:, None], float("-inf"))
            seq_loss = F.cross_entropy(torch.cat([pos_logit, neg_logit], 1), torch.zeros_like(tgt))
        total = total + seq_loss
        logs["seq"] = seq_loss.item()

    if with_cut:
        b, c = cuts.shape
        memory_at, hidden = out.memory_at, out.hidden
        if tcfg.cut_detach_state:
            memory_at, hidden = memory_at.detach(), hidden.detach()
        seeds = model.summarizer(model.stack, memory_at.flatten(0, 1), out.count_at.flatten())  # [B*C, K, D]
        slots = cfg.recent_slots
        recent_h = _gather_time(states.recent_h, hidden, cuts, slots).flatten(0, 1)
        recent_items = _gather_time(states.recent_items, batch.padded()[0], cuts, slots).flatten(0, 1)
        cut_targets = target_pad.gather(1, cuts).flatten()
        last_h = recent_h[:, -1]
        tokens = recent_h
        item_emb = item_table.detach() if tcfg.cut_detach_items else item_table
        if num_items <= tcfg.full_softmax_max_items and tcfg.cut_negatives is None:  # the whole catalog, as ranked
            every = item_emb[1 : num_items + 1][None]  # [1, V, D], shared by every row
            logits = model.scorer(every, seeds, tokens, recent_items > 0, last_h)
            cut_loss = F.cross_entropy(logits, cut_targets - 1)
        else:
            neg, neg_logq = sampler.sample(tcfg.cut_negatives or tcfg.negatives)
            cand = torch.cat([cut_targets[:, None], neg[None].expand(b * c, -1)], dim=1)
            logq = torch.cat([sampler.log_q(cut_targets)[:, None], neg_logq[None].expand(b * c, -1)], dim=1)
            cand_emb = F.embedding(cand, item_emb, padding_idx=0)
            logits = model.scorer(cand_emb, seeds, tokens, recent_items > 0, last_h) - logq
            logits[:, 1:] = logits[:, 1:].masked_fill(neg[None] == cut_targets[:, None], float("-inf"))
            cut_loss = F.cross_entropy(logits, torch.zeros(b * c, dtype=torch.long))
        total = total + cut_loss
        logs["cut"] = cut_loss.item()
        if tcfg.lambda_rec > 0:
            w = cfg.recon_window
            window_items = _gather_time(torch.cat([torch.zeros(b, w, dtype=torch.long), states.recent_items], 1)[:, -w:],
                                        batch.padded()[0], cuts, w).flatten(0, 1)
            window_emb = F.embedding(window_items, item_emb, padding_idx=0)
            rec = model.decoder.loss(seeds, window_emb, (window_items > 0).float())
            total = total + tcfg.lambda_rec * rec
            logs["rec"] = rec.item()
    logs["loss"] = total.item()
    return total, logs


def train_step(model: VistaModel, batch: list[EncodedSequence], sampler: NegativeSampler, tcfg: TrainConfig,
               num_items: int, generator: torch.Generator, opt: torch.optim.Optimizer, *,
               with_cut: bool = True) -> dict[str, float]:
    """One optimizer step on one batch (loss, backward, gradient clipping, update); returns the loss parts.

    Parameters without a gradient this step (the target branch on a `with_cut=False` step) are left as they
    are: AdamW skips them, moments included."""
    loss, logs = batch_loss(model, batch, sampler, tcfg, num_items, generator, with_cut=with_cut)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
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

    Returns a summary dict (epochs, time, best validation metrics, per-epoch history).
    """
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    torch.manual_seed(tcfg.seed)
    random.seed(tcfg.seed)
    gen = torch.Generator().manual_seed(tcfg.seed)
    num_items = len(vocab)
    train = [s for s in split.train if len(s) >= 2]
    sampler = NegativeSampler(train, num_items, gen)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    rng = random.Random(tcfg.seed)
    valid = split.valid[: tcfg.eval_users]
    best = {"NDCG@10": -math.inf}
    best_state = copy.deepcopy(model.state_dict())
    history, bad_epochs, start, step = [], 0, time.monotonic(), 0
    for epoch in range(1, tcfg.epochs + 1):
        model.train()
        batches = length_buckets(train, tcfg.batch_size, rng)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        bar = tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=None)
        for batch in bar:
            logs = train_step(model, batch, sampler, tcfg, num_items, gen, opt, with_cut=step % tcfg.cut_every == 0)
            step += 1
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
            bar.set_postfix(loss=f"{logs['loss']:.3f}")
            if time.monotonic() - start > tcfg.time_budget_s:
                break
        out_of_time = time.monotonic() - start > tcfg.time_budget_s
        if not tcfg.validates_after(epoch, out_of_time):
            continue
        model.eval()
        metrics = evaluate(vista_score_fn(model, vocab, rerank_top=tcfg.rerank_top), valid, num_items)
        record = {"epoch": epoch, "elapsed_s": round(time.monotonic() - start, 1),
                  **{f"train_{k}": v / counts[k] for k, v in sums.items()},
                  **{f"val_{k}": v for k, v in metrics.items()}}
        history.append(record)
        log(record)
        if metrics["NDCG@10"] > best["NDCG@10"]:
            best, bad_epochs = metrics, 0
            best_state = copy.deepcopy(model.state_dict())
            if checkpoint is not None:
                checkpoint(model, record)
        else:
            bad_epochs += 1
        if bad_epochs >= tcfg.patience or out_of_time:
            break
    model.load_state_dict(best_state)
    model.eval()
    return {"epochs": epoch, "train_time_s": round(time.monotonic() - start, 1),
            "best_val": best, "history": history}
