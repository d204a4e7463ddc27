"""VISTA's training loss (design note): the sequence loss of every window position, and on cut-point
steps the seeds + target-attention loss and the generative reconstruction loss at sampled positions.
Kept apart from the loop and the optimizer so that it can be tested and benchmarked on its own."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from models.state import EventBatch, UserStates
from models.training.budget import NegativeSampler
from models.training.data import EncodedSequence, to_batch
from models.training.tiles import Tile
from models.vista import UserSummary, VistaModel

if TYPE_CHECKING:
    from models.training.trainer import TrainConfig


def cut_positions(lengths: Tensor, count: int, generator: torch.Generator, include_last: bool = True,
                  eligible: Tensor | None = None) -> Tensor:
    """[B, C] positions per row, uniform over each row's positions; the last one always included if asked.

    eligible [B, T] bool: draw only among these positions (the return objective's targets), with replacement;
    a row without any draws among all of its positions."""
    if eligible is not None:
        valid = torch.arange(eligible.shape[1])[None, :] < lengths[:, None]
        weights = torch.where(eligible.any(1, keepdim=True), eligible & valid, valid).float()
        return torch.multinomial(weights + (weights.sum(1, keepdim=True) == 0).float(), count,
                                 replacement=True, generator=generator)
    rand = torch.rand(lengths.shape[0], count - int(include_last), generator=generator)
    cuts = (rand * lengths[:, None].float()).long().clamp(max=(lengths - 1)[:, None])
    if include_last:
        cuts = torch.cat([cuts, (lengths - 1)[:, None]], dim=1)
    return cuts.clamp(min=0)


def gather_time(prefix: Tensor, window: Tensor, ends: Tensor, width: int) -> Tensor:
    """From [prefix (width slots) ; window] take the `width` entries ending at window position ends [B, C]."""
    full = torch.cat([prefix, window], dim=1)
    idx = ends[..., None] + 1 + torch.arange(width)[None, None, :]  # [B, C, width] in `full` coordinates
    b, c = ends.shape
    flat = idx.reshape(b, -1)
    if full.dim() == 2:
        return torch.gather(full, 1, flat).reshape(b, c, width)
    out = torch.gather(full, 1, flat[..., None].expand(-1, -1, full.shape[-1]))
    return out.reshape(b, c, width, full.shape[-1])


def split_windows(model: VistaModel, seqs: list[EncodedSequence] | list[Tile], window: int
                  ) -> tuple[UserStates, EventBatch, Tensor, Tensor]:
    """Each sequence as (its events before the gradient window, folded into a state without gradients; the
    window's `window` inputs, its last ones; their next items and whether each is a training target, right-padded
    [B, T] like the inputs), the training form every VISTA loss starts from. A `Tile` brings its own window and
    state (models/training/tiles.py)."""
    if seqs and isinstance(seqs[0], Tile):
        states = UserStates.cat([t.state for t in seqs])
        spans = [(t.seq, t.start, t.stop) for t in seqs]
    else:
        spans = [(s, max(0, len(s) - 1 - window), len(s) - 1) for s in seqs]
        states = model.update(model.init_state(len(seqs)), to_batch([s.slice(start) for s, start, _ in spans]))
    windows, targets, learn = [], [], []
    for s, start, stop in spans:
        windows.append(s.slice(stop, start))
        targets.append(s.items[start + 1 : stop + 1])
        learn.append(s.learnable()[start + 1 : stop + 1])
    batch = to_batch(windows)
    mask = batch.padded()[3]
    target_pad = torch.zeros_like(mask, dtype=torch.long)
    target_pad[mask] = torch.cat(targets)
    learn_pad = torch.zeros_like(mask)
    learn_pad[mask] = torch.cat(learn)
    return states, batch, target_pad, learn_pad


def recent_at_cuts(states: UserStates, batch: EventBatch, hidden: Tensor, cuts: Tensor, slots: int
                   ) -> tuple[Tensor, Tensor]:
    """The ring buffer (h^L [B*C, R, D] and item rows [B*C, R]) as it stands right after each cut position:
    the stored prefix's ring continued by the window's own events."""
    return (gather_time(states.recent_h, hidden, cuts, slots).flatten(0, 1),
            gather_time(states.recent_items, batch.padded()[0], cuts, slots).flatten(0, 1))


def batch_loss(model: VistaModel, seqs: list[EncodedSequence] | list[Tile], sampler: NegativeSampler, tcfg: TrainConfig,
               num_items: int, generator: torch.Generator, *, with_cut: bool = True) -> tuple[Tensor, dict[str, float]]:
    """Loss of one batch of training sequences (each predicts its own next items).

    with_cut False: the sequence loss alone (a step between two `cut_every` steps), no cut states materialized.
    """
    cfg = model.cfg
    states, batch, target_pad, learn_pad = split_windows(model, seqs, tcfg.window)
    lengths = batch.lengths
    with_cut = (cfg.target_readout or cfg.memory_readout) and (with_cut or not cfg.sequence_readout)  # some loss stays
    eligible = learn_pad if tcfg.return_gap is not None or tcfg.session_gap_s is not None else None
    cuts = cut_positions(lengths, tcfg.cut_points, generator, tcfg.cut_last, eligible) if with_cut else None
    out = model.scan(batch, states, state_positions=cuts)
    mask = out.mask & learn_pad
    item_table = model.embedding.item.weight
    logs: dict[str, float] = {}
    total = torch.zeros((), requires_grad=True)  # a batch without any training target steps nothing

    if cfg.sequence_readout and bool(mask.any()):
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
        memory_at, count_at = memory_at.flatten(0, 1), out.count_at.flatten()
        seeds = model.summarizer(model.stack, memory_at, count_at) if cfg.target_readout else None  # [B*C, K, D]
        recent_h, recent_items = recent_at_cuts(states, batch, hidden, cuts, cfg.recent_slots)
        summary = UserSummary(seeds, recent_items, recent_h, model.read_operand(memory_at, count_at))
        cut_targets = target_pad.gather(1, cuts).flatten()
        kept = learn_pad.gather(1, cuts).flatten()  # a cut drawn where a row has no training target teaches nothing
        item_emb = item_table.detach() if tcfg.cut_detach_items else item_table
        if num_items <= tcfg.full_softmax_max_items and tcfg.cut_negatives is None:  # the whole catalog, as ranked
            every = item_emb[1 : num_items + 1][None]  # [1, V, D], shared by every row
            cut_loss = F.cross_entropy(model.logits(every, summary)[kept], cut_targets[kept] - 1)
        else:
            neg, neg_logq = sampler.sample(tcfg.cut_negatives or tcfg.negatives)
            cand = torch.cat([cut_targets[:, None], neg[None].expand(b * c, -1)], dim=1)
            logq = torch.cat([sampler.log_q(cut_targets)[:, None], neg_logq[None].expand(b * c, -1)], dim=1)
            cand_emb = F.embedding(cand, item_emb, padding_idx=0)
            logits = model.logits(cand_emb, summary) - logq
            logits[:, 1:] = logits[:, 1:].masked_fill(neg[None] == cut_targets[:, None], float("-inf"))
            cut_loss = F.cross_entropy(logits[kept], torch.zeros(int(kept.sum()), dtype=torch.long))
        if bool(kept.any()):
            total = total + cut_loss
            logs["cut"] = cut_loss.item()
        if tcfg.lambda_rec > 0 and seeds is not None:
            w = cfg.recon_window
            window_items = gather_time(torch.cat([torch.zeros(b, w, dtype=torch.long), states.recent_items], 1)[:, -w:],
                                        batch.padded()[0], cuts, w).flatten(0, 1)
            window_emb = F.embedding(window_items, item_emb, padding_idx=0)
            rec = model.decoder.loss(seeds, window_emb, (window_items > 0).float())
            total = total + tcfg.lambda_rec * rec
            logs["rec"] = rec.item()
    logs["loss"] = total.item()
    return total, logs
