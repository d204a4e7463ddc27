"""The one state-update path: events + stored rows -> new rows. Pure (no I/O); the live worker and the
backfill both call `apply_events`, so there is exactly one place where events become state.

Idempotency (invariant 4): every event carries its source ("topic:partition", or "file:<name>") and
offset; a row remembers the highest offset applied per source, and events at or below it are skipped.
Offsets of one source must increase in the order events are given (Kafka guarantees it per partition).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

import torch

from models.state import EventBatch, UserStates
from models.vista import VistaModel
from models.vocab import ItemVocab
from schemas.events import InteractionEvent
from schemas.rows import SummaryRow
from stream.rows import rows_from_states, states_from_rows


@dataclass(frozen=True)
class SourcedEvent:
    """A validated event and where it came from (for exactly-once-in-effect application)."""

    event: InteractionEvent
    source: str
    offset: int


@dataclass
class ApplyResult:
    """New rows (one per user that received at least one new event) and counters for metrics."""

    rows: list[SummaryRow]
    applied: int = 0
    skipped: int = 0
    oov: int = 0
    timings: dict[str, float] = field(default_factory=dict)


def pending_events(row: SummaryRow | None, events: list[SourcedEvent]) -> list[SourcedEvent]:
    """The events of one user that the row has not applied yet (offset > stored offset of their source)."""
    applied = row.applied_offsets if row is not None else {}
    return [e for e in events if e.offset > applied.get(e.source, -1)]


def group_by_user(events: list[SourcedEvent]) -> dict[str, list[SourcedEvent]]:
    """Events per user, in the given (arrival) order."""
    grouped: dict[str, list[SourcedEvent]] = defaultdict(list)
    for e in events:
        grouped[e.event.user_id].append(e)
    return dict(grouped)


def _merged_offsets(row: SummaryRow | None, events: list[SourcedEvent]) -> dict[str, int]:
    offsets = dict(row.applied_offsets) if row is not None else {}
    for e in events:
        offsets[e.source] = max(offsets.get(e.source, -1), e.offset)
    return offsets


def apply_events(
    model: VistaModel,
    vocab: ItemVocab,
    model_version: str,
    rows: dict[str, SummaryRow | None],
    events: list[SourcedEvent],
    *,
    seeds_dtype: Literal["float16", "int8q"] = "float16",
    chunk_size: int | None = None,
) -> ApplyResult:
    """Apply `events` (any users, arrival order) on top of the stored `rows` (None = new user).

    All touched users go through one ragged `model.update` call and one `summarize` call. Rows of
    another model_version are refused: a state is only ever continued by the model that built it.
    `chunk_size` is passed to `model.update` (time chunk; small chunks stop padding short users to the
    longest user of the batch, which dominates the worker's CPU time).
    """
    grouped = group_by_user(events)
    users, todo, base_rows, skipped = [], [], [], 0
    for user, user_events in grouped.items():
        row = rows.get(user)
        if row is not None and row.model_version != model_version:
            raise ValueError(f"row of user {user!r} has model_version {row.model_version}, not {model_version}: "
                             "a state is never continued by another model (run a backfill)")
        fresh = pending_events(row, user_events)
        skipped += len(user_events) - len(fresh)
        if fresh:
            users.append(user)
            todo.append(fresh)
            base_rows.append(row)
    if not users:
        return ApplyResult(rows=[], skipped=skipped)

    t0 = time.perf_counter()
    states = _load_states(model, base_rows)
    items, oov = [], 0
    for user_events in todo:
        for e in user_events:
            known = vocab.is_known(e.event.item_id)
            oov += not known
            items.append(vocab.index(e.event.item_id))
    flat = [e.event for user_events in todo for e in user_events]
    batch = EventBatch(torch.tensor(items, dtype=torch.long),
                       torch.tensor([e.action for e in flat], dtype=torch.long),
                       torch.tensor([e.timestamp for e in flat], dtype=torch.long),
                       torch.tensor([len(t) for t in todo], dtype=torch.long))
    t1 = time.perf_counter()
    chunking = {} if chunk_size is None else {"chunk_size": chunk_size}
    new_states = model.update(states, batch, **chunking)
    t2 = time.perf_counter()
    with torch.no_grad():
        summary = model.summarize(new_states)
    t3 = time.perf_counter()
    offsets = [_merged_offsets(row, user_events) for row, user_events in zip(base_rows, todo)]
    new_rows = rows_from_states(users, model_version, new_states, summary, offsets, seeds_dtype=seeds_dtype)
    t4 = time.perf_counter()
    return ApplyResult(rows=new_rows, applied=len(flat), skipped=skipped, oov=oov,
                       timings={"decode_state": t1 - t0, "update": t2 - t1, "summarize": t3 - t2, "encode": t4 - t3})


def _load_states(model: VistaModel, rows: list[SummaryRow | None]) -> UserStates:
    """Stored rows as a state batch on the model's device; new users start empty."""
    empty = model.init_state(len(rows))
    stored = [i for i, r in enumerate(rows) if r is not None]
    if not stored:
        return empty
    decoded = states_from_rows([rows[i] for i in stored]).to(model.device)
    index = torch.tensor(stored, dtype=torch.long, device=model.device)
    for name in ("memory", "count", "last_ts", "recent_items", "recent_h"):
        getattr(empty, name)[index] = getattr(decoded, name).to(getattr(empty, name).dtype)
    return empty
