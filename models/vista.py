"""VistaModel: the one public API that the trainer, stream worker, backfill and scorer all call.

    states  = model.init_state(batch)              # empty histories
    states  = model.update(states, events)         # ragged: many users, any number of events each
    summary = model.summarize(states)              # seeds [B, K, D] + recent tokens
    logits  = model.score(summary, candidates)     # [B, C]; candidates [C] shared or [B, C]
    out     = model.scan(events, states)           # training form: per-position outputs (+ cut states)

`update` is exact: any split of a user's events into calls gives the same state
as one call over all of them (up to fp32 rounding), because it only ever
continues the causal recurrence from the stored state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from kernels.qla import Backend
from models.config import ModelConfig
from models.decoder import ReconstructionDecoder
from models.embedding import EventEmbedding
from models.memory_read import MemoryReadout
from models.qla import HistoryStack
from models.state import EventBatch, UserStates
from models.summarizer import SeedSummarizer
from models.target import TargetScorer

GPU_CHUNK = 1024
CPU_MAX_CHUNK = 1024
CPU_TOKENS_PER_CHUNK = 4096


def auto_chunk(batch: int, device: torch.device) -> int:
    """Time chunk of `update`: about 4k user x event cells per step, at most 1,024 events. A longer chunk pays
    less Python per event, a shorter one keeps the [users, chunk, D] intermediates in cache and pads a
    ragged batch less. Measured on one loaded thread with the linear form (default model): 128 users x 100
    events peak at chunk 32-100 (~100k ev/s), 16 x 1,000 at 256 (92k), 4 x 10^4 at 1,024 (79k), and one user
    of 10^5 at 1,024 (65k; 7k at chunk 16). A GPU wants the long chunk."""
    if device.type == "cuda":
        return GPU_CHUNK
    return max(16, min(CPU_MAX_CHUNK, CPU_TOKENS_PER_CHUNK // max(batch, 1)))


@dataclass
class UserSummary:
    """What the scorer needs of a user, all of fixed size: seeds, the recent ring buffer, the user vector.

    seeds is None for a model without the target readout: its scorer reads only u, so nothing computes,
    stores or reads them. memory (the stored state over its count) is there only for the memory readout."""

    seeds: Tensor | None  # [B, K, D]
    recent_items: Tensor  # [B, R] item rows, newest last, 0 = empty
    recent_h: Tensor  # [B, R, D]
    memory: Tensor | None = None  # [B, L, H, d, d] M^l/n, only for a model with the memory readout

    @property
    def recent_mask(self) -> Tensor:
        return self.recent_items > 0

    @property
    def last_h(self) -> Tensor:
        """h_T^L of the newest event (zeros for an empty history)."""
        return self.recent_h[:, -1]


@dataclass
class ScanOutput:
    """Training form of a batch: right-padded per-position outputs and the states they imply."""

    hidden: Tensor  # [B, T, D] h^L per position
    mask: Tensor  # [B, T] real positions
    memory: Tensor  # [B, L, H, d, d] final memory
    memory_at: Tensor | None  # [B, C, L, H, d, d] memory after each cut position
    count_at: Tensor | None  # [B, C] events seen at each cut position


def _push_recent(items: Tensor, h: Tensor, old_items: Tensor, old_h: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Append each row's `lengths` new (item, h) pairs to its right-aligned ring buffer of size R."""
    r = old_items.shape[1]
    all_items = torch.cat([old_items, items], dim=1)
    all_h = torch.cat([old_h, h], dim=1)
    idx = lengths[:, None] + torch.arange(r, device=items.device)[None, :]
    return (torch.gather(all_items, 1, idx),
            torch.gather(all_h, 1, idx[..., None].expand(-1, -1, h.shape[-1])))


class VistaModel(nn.Module):
    """Causal-QLA VISTA: embedding -> history stack -> seeds -> target attention scorer."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = EventEmbedding(cfg)
        self.stack = HistoryStack(cfg)
        self.summarizer = SeedSummarizer(cfg)
        self.scorer = TargetScorer(cfg)
        self.decoder = ReconstructionDecoder(cfg)
        self.memory_read = MemoryReadout(cfg) if cfg.memory_readout else None
        self.backend = Backend.TORCH

    @property
    def backend(self) -> Backend:
        """Which QLA kernels run the stack; Triton also runs the scorer's target attention (inference)."""
        return self._backend

    @backend.setter
    def backend(self, value: Backend) -> None:
        self._backend = value
        self.scorer.backend = value

    @property
    def device(self) -> torch.device:
        return self.embedding.item.weight.device

    # ---- state ----------------------------------------------------------------------------------
    def init_state(self, batch: int) -> UserStates:
        """Empty states for `batch` users."""
        c, dev = self.cfg, self.device
        # fp32 state always; an fp64 copy of the model (reference recomputes) keeps fp64
        dtype = torch.float64 if self.embedding.item.weight.dtype == torch.float64 else torch.float32
        return UserStates(
            memory=torch.zeros(batch, c.layers, c.heads, c.head_dim, c.head_dim, device=dev, dtype=dtype),
            count=torch.zeros(batch, dtype=torch.long, device=dev),
            last_ts=torch.full((batch,), -1, dtype=torch.long, device=dev),
            recent_items=torch.zeros(batch, c.recent_slots, dtype=torch.long, device=dev),
            recent_h=torch.zeros(batch, c.recent_slots, c.dim, device=dev, dtype=dtype),
        )

    @torch.no_grad()
    def update(self, states: UserStates, events: EventBatch, *, chunk_size: int | None = None) -> UserStates:
        """Apply each user's new events (in order) to its state; returns new states (inputs untouched).

        Works in time chunks over the packed events, so a 10^6-event user costs
        memory O(chunk) and a batch of short users never pads to the longest. `chunk_size` None: `auto_chunk`.
        """
        if events.batch_size != states.batch_size:
            raise ValueError(f"{events.batch_size} event rows for {states.batch_size} states")
        dev = self.device
        events = EventBatch(events.items.to(dev), events.actions.to(dev), events.timestamps.to(dev), events.lengths.to(dev))
        memory, count = states.memory.clone(), states.count.clone()
        last_ts, recent_items, recent_h = states.last_ts.clone(), states.recent_items.clone(), states.recent_h.clone()
        starts = events.cu_seqlens[:-1]
        t_max = int(events.lengths.max()) if events.batch_size else 0
        chunk_size = chunk_size or auto_chunk(events.batch_size, dev)
        for start in range(0, t_max, chunk_size):
            remaining = (events.lengths - start).clamp(min=0, max=chunk_size)
            active = torch.nonzero(remaining > 0).flatten()
            rem = remaining[active]
            width = int(rem.max())
            offs = torch.arange(width, device=dev)[None, :]
            valid = offs < rem[:, None]
            idx = torch.where(valid, starts[active][:, None] + start + offs, torch.zeros_like(offs))
            items = torch.where(valid, events.items[idx], torch.zeros_like(idx))
            stamps = events.timestamps[idx]
            x = self.embedding(items, events.actions[idx], stamps, last_ts[active])
            h, new_memory, _ = self.stack(x, memory[active], count[active], rem, backend=self.backend)
            memory[active] = new_memory
            count[active] += rem
            last_ts[active] = stamps.gather(1, (rem - 1)[:, None]).squeeze(1)
            new_items, new_h = _push_recent(items, h.half().to(h.dtype), recent_items[active], recent_h[active], rem)
            recent_items[active] = new_items
            recent_h[active] = new_h
        return UserStates(memory, count, last_ts, recent_items, recent_h)

    # ---- summary and scoring --------------------------------------------------------------------
    def summarize(self, states: UserStates) -> UserSummary:
        """Seeds from the state (once per user per micro-batch; only if the scorer reads them) plus the
        recent buffer."""
        seeds = self.summarizer(self.stack, states.memory, states.count) if self.cfg.target_readout else None
        memory = self.read_operand(states.memory, states.count)
        return UserSummary(seeds=seeds, recent_items=states.recent_items, recent_h=states.recent_h, memory=memory)

    def read_operand(self, state: Tensor, count: Tensor) -> Tensor | None:
        """M^l/n [B, L, H, d, d], what the memory readout reads (None for a model without it)."""
        return self.memory_read.memory(state, count, self.stack.gamma) if self.memory_read is not None else None

    def score(self, summary: UserSummary, candidates: Tensor) -> Tensor:
        """Logits [B, C] for candidate item rows: [C] (the same for every user) or [B, C]."""
        cand = candidates.to(self.device)
        emb = self.embedding.item(cand if cand.dim() == 2 else cand[None])
        return self.logits(emb, summary)

    def logits(self, candidate_emb: Tensor, summary: UserSummary) -> Tensor:
        """Logits [B, C] of candidate embeddings [B or 1, C, D]: the scorer's terms plus the memory readout's."""
        out = self.scorer(candidate_emb, summary.seeds, summary.recent_h, summary.recent_mask, summary.last_h)
        if self.memory_read is not None:
            if summary.memory is None:
                raise ValueError("this model's memory readout needs the user's memory")
            out = out + self.memory_read(candidate_emb, summary.memory)
        return out

    # ---- training form --------------------------------------------------------------------------
    def scan(self, events: EventBatch, states: UserStates | None = None, *,
             state_positions: Tensor | None = None) -> ScanOutput:
        """Whole sequences in parallel (with gradients), continuing from `states` (default: empty).

        state_positions [B, C]: positions whose post-event memory is returned (cut points).
        """
        if states is None:
            states = self.init_state(events.batch_size)
        items, actions, stamps, mask = (t.to(self.device) for t in events.padded())
        x = self.embedding(items, actions, stamps, states.last_ts)
        lengths = events.lengths.to(self.device)
        h, memory, memory_at = self.stack(x, states.memory, states.count, lengths,
                                          state_positions=state_positions, backend=self.backend)
        count_at = None
        if state_positions is not None:
            count_at = states.count[:, None] + state_positions.to(self.device) + 1
        return ScanOutput(hidden=h, mask=mask, memory=memory, memory_at=memory_at, count_at=count_at)
