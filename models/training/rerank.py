"""The residual reranker: a second training stage on a frozen stack.

The whole model scores candidate c as <u, e_c> + Δ(c), where Δ is target attention from c over the seeds
and the recent tokens (`TargetScorer.delta`). Δ is trained here, after the stack, on what the scorer
meets: each cut's top-N items by u·e (hard negatives) plus the true next item, with the stack's logit as a
fixed offset. Nothing of this loss reaches the stack, the item table or the user vector's LayerNorm: the
stack runs without gradients and those parameters are frozen. (Training the reranker through that shared
LayerNorm is what collapsed the earlier "retrieved negatives" cascade.) W_r starts at zero, so before any
step the whole model ranks exactly as the stack does.

The checkpoint records whether Δ passed validation (whole model >= stack on validation NDCG@10 in the
cascade protocol); the scorer serves Δ only if it did.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from models.config import ModelConfig
from models.training.budget import BudgetConfig, length_buckets, optimizer_step, start_run
from models.training.data import EncodedSequence, LeaveOneOut
from models.training.evaluate import evaluate, mask_seen, vista_score_fn
from models.training.loop import fit, validation, validation_users
from models.training.losses import cut_positions, recent_at_cuts, split_windows
from models.vista import VistaModel
from models.vocab import ItemVocab

FROZEN = ("embedding", "stack", "scorer.u_norm", "decoder")


class RerankConfig(BudgetConfig):
    """Training of Δ on a frozen stack: budget rules plus the cascade it is trained and chosen for."""

    time_budget_s: float = Field(default=300.0, gt=0, description="at most the stack's own training time")
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=1e-3, gt=0, description="chosen on ML-100K validation over 3e-4 and 3e-3")
    patience: int = Field(default=5, ge=1)
    eval_users: int = Field(default=5000, ge=1, description="validation users: enough to separate Δ from the "
                            "stack (1,000 did not on a held-out Amazon category)")
    rerank_top: int = Field(default=100, ge=1, description="candidates Δ reorders: the top N by u·e")
    cut_points: int = Field(default=4, ge=1, description="positions per training sequence where Δ is trained")
    window: int = Field(default=64, ge=2, description="gradient window (the stack's; earlier events via the state)")
    exclude_future: bool = Field(default=True, description="leave out of each cut's negatives the items its "
                                 "user consumes later in the window (else they are false negatives)")
    holdout: int | None = Field(default=None, ge=1, description="train Δ only on each training sequence's last "
                                "`holdout` next items, which the stack was trained without (`held_out_split`): "
                                "there the stack's logits are not memorized (None: any position)")


def held_out_split(split: LeaveOneOut, holdout: int) -> LeaveOneOut:
    """The split the stack trains on when Δ gets a held-out slice: every training sequence without its last
    `holdout` items (validation and test unchanged)."""
    return LeaveOneOut([s.slice(max(len(s) - holdout, 2)) for s in split.train], split.valid, split.test)


def with_reranker(stack: VistaModel, **overrides) -> VistaModel:
    """The whole model (target readout, K seeds, R recent events) around a trained stack's weights; Δ = 0."""
    fields = {**stack.cfg.model_dump(), "target_readout": True, "recent": 20, **overrides}
    model = VistaModel(ModelConfig(**fields))
    own = model.state_dict()
    own.update({k: v for k, v in stack.state_dict().items() if k in own and own[k].shape == v.shape})
    model.load_state_dict(own)
    return model.eval()


def verdict(summary: dict, cfg: RerankConfig) -> dict:
    """What a whole-model checkpoint records for the scorer (meta["reranker"]): whether Δ passed validation,
    the N it reranks, and both validation NDCG@10s (`train_reranker`'s summary)."""
    return {"passed": summary["passed"], "rerank_top": cfg.rerank_top,
            "val_NDCG@10": summary["best_val"]["NDCG@10"], "stack_val_NDCG@10": summary["stack_val"]["NDCG@10"]}


def reranker_parameters(model: VistaModel) -> list[torch.nn.Parameter]:
    """Δ's parameters: the seeds and their projections, the target attention, its norm and W_r."""
    return [p for name, p in model.named_parameters() if not name.startswith(FROZEN)]


def rerank_loss(model: VistaModel, seqs: list[EncodedSequence], cfg: RerankConfig, num_items: int,
                generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
    """Softmax over [true next item; its top-N by u·e] with logits <u, e> (fixed) + Δ, at random cut points."""
    model.embedding.eval()
    model.stack.eval()  # the frozen stack runs as served: no dropout
    with torch.no_grad():
        states, batch, target_pad, _ = split_windows(model, seqs, cfg.window)
        cuts = cut_positions(batch.lengths, cfg.cut_points, generator, include_last=False)
        if cfg.holdout is not None:  # the last `holdout` positions only: next items the stack never trained on
            back = (torch.rand(cuts.shape, generator=generator) * cfg.holdout).long()
            cuts = (batch.lengths[:, None] - 1 - back).clamp(min=0)
        out = model.scan(batch, states, state_positions=cuts)
        recent_h, recent_items = recent_at_cuts(states, batch, out.hidden, cuts, model.cfg.recent_slots)
        truth = target_pad.gather(1, cuts).flatten()
        last_h = recent_h[:, -1]
        table = model.embedding.item.weight[1 : num_items + 1]
        retrieval = model.scorer.sequence_logits(last_h, table[None])
        truth_logit = retrieval.gather(1, (truth - 1)[:, None])
        retrieval.scatter_(1, (truth - 1)[:, None], -math.inf)
        if cfg.exclude_future:  # items this user goes on to consume are no negatives (ML-100K rates in bursts)
            future = _later_items(target_pad, cuts)
            retrieval.scatter_(1, (future - 1).clamp(min=0), -math.inf)
        hard = retrieval.topk(min(cfg.rerank_top, num_items - 1), dim=1)
        # only cuts whose true item the retrieval puts in the top N: the reranker never sees the others, and
        # training on them teaches Δ to lift whatever u·e ranks low, which reorders a real top N for the worse
        inside = truth_logit[:, 0] >= hard.values[:, -1]
        candidates = torch.cat([truth[:, None], hard.indices + 1], dim=1)[inside]
        truth, recent_h, recent_items = truth[inside], recent_h[inside], recent_items[inside]
        last_h = last_h[inside]
        cand_emb = model.embedding.item(candidates)
        base = model.scorer.sequence_logits(last_h, cand_emb)
    if not len(truth):  # no true item inside any cut's top N in this batch: nothing to learn from
        zero = sum(p.sum() * 0 for p in reranker_parameters(model))
        return zero, {"loss": 0.0, "delta_abs": 0.0, "inside": 0.0}
    seeds = model.summarizer(model.stack, out.memory_at.flatten(0, 1)[inside], out.count_at.flatten()[inside])
    delta = model.scorer.delta(cand_emb, seeds, recent_h, recent_items > 0)
    loss = F.cross_entropy(base + delta, torch.zeros(len(truth), dtype=torch.long))
    return loss, {"loss": loss.item(), "delta_abs": delta.detach().abs().mean().item(),
                  "inside": float(inside.float().mean())}


def _later_items(target_pad: Tensor, cuts: Tensor) -> Tensor:
    """[B*C, T] item rows each cut's user consumes after it in the window (padded with the cut's own target,
    which is excluded from the negatives anyway)."""
    b, t = target_pad.shape
    positions = torch.arange(t)[None, None, :]
    later = positions >= cuts[..., None]  # [B, C, T]: the target at the cut and every one after it
    own = target_pad.gather(1, cuts)[..., None].expand(-1, -1, t)
    items = torch.where(later, target_pad[:, None, :].expand(-1, cuts.shape[1], -1), own)
    items = torch.where(items > 0, items, own)
    return items.flatten(0, 1)


def stack_score_fn(model: VistaModel, vocab: ItemVocab):  # noqa: ANN201 - a ScoreFn
    """The stack alone over the whole catalog (what the cascade gives when Δ is off)."""
    from models.training.data import to_batch

    rows = vocab.known_indices()

    @torch.no_grad()
    def score(histories: list[EncodedSequence]) -> Tensor:
        states = model.update(model.init_state(len(histories)), to_batch(histories))
        return model.scorer.sequence_logits(states.recent_h[:, -1], model.embedding.item(rows)[None]).float()

    return score


def train_reranker(model: VistaModel, vocab: ItemVocab, split: LeaveOneOut, cfg: RerankConfig, *,
                   log: Callable[[dict], None] = print,
                   checkpoint: Callable[[VistaModel, dict], None] | None = None) -> dict:
    """Train Δ of `model` (a `with_reranker` model) on its frozen stack; early stopping on validation NDCG@10
    of the cascade. Returns the loop's summary plus the stack's validation metrics and `passed`."""
    num_items = len(vocab)
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith(FROZEN))
    run = start_run(model, split, num_items, cfg)
    run.opt = torch.optim.AdamW(reranker_parameters(model), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.eval()
    stack_val = evaluate(stack_score_fn(model, vocab), validation_users(split, cfg.eval_users), num_items,
                         exclude_seen=cfg.exclude_seen)

    def step(batch: list[EncodedSequence]) -> dict[str, float]:
        loss, logs = rerank_loss(model, batch, cfg, num_items, run.generator)
        optimizer_step(model, run.opt, loss)
        return logs

    validate = validation(lambda: vista_score_fn(model, vocab, rerank_top=cfg.rerank_top), split, num_items, cfg)
    summary = fit(model, lambda: length_buckets(run.train, cfg.batch_size, run.shuffler), step, validate, cfg,
                  log=log, checkpoint=checkpoint)
    summary["stack_val"] = stack_val
    summary["passed"] = summary["best_val"]["NDCG@10"] >= stack_val["NDCG@10"]
    return summary


@torch.no_grad()
def rerank_diagnostics(model: VistaModel, vocab: ItemVocab, cases: list[tuple[EncodedSequence, int]],
                       rerank_top: int, batch_size: int = 256) -> dict[str, float]:
    """On test cases: the share of users whose target rank improved / worsened under Δ (cascade), and Δ's
    mean magnitude against the spread (std) of the stack's logits over the same top-N candidates."""
    from models.training.data import to_batch
    from models.training.metrics import target_ranks

    rows = vocab.known_indices()
    catalog = model.embedding.item(rows)[None]
    improved = worsened = 0
    delta_abs, spread = [], []
    for start in range(0, len(cases), batch_size):
        part = cases[start : start + batch_size]
        targets = torch.tensor([t - 1 for _, t in part])
        summary = model.summarize(model.update(model.init_state(len(part)), to_batch([h for h, _ in part])))
        # seen items are no candidates, as the evaluation masks them
        stack = mask_seen(model.scorer.sequence_logits(summary.last_h, catalog), part)
        top = stack.topk(rerank_top, dim=1).indices
        cand = rows[top]
        delta = model.scorer.delta(model.embedding.item(cand), summary.seeds, summary.recent_h, summary.recent_mask)
        base = stack.gather(1, top)
        whole = stack.clone()
        whole.scatter_(1, top, base + delta - (base + delta).min(1, keepdim=True).values
                       + stack.gather(1, top).min(1, keepdim=True).values)
        # inside the top N only the order changes; ranks outside it are the stack's
        before, after = target_ranks(stack, targets), target_ranks(whole, targets)
        improved += int((after < before).sum())
        worsened += int((after > before).sum())
        delta_abs.append(delta.abs().mean(1))
        spread.append(base.std(1))
    n = max(len(cases), 1)
    return {"improved_share": improved / n, "worsened_share": worsened / n,
            "delta_mean_abs": float(torch.cat(delta_abs).mean()), "stack_logit_std": float(torch.cat(spread).mean())}
