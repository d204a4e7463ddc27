"""Applying one backfill chunk: its users' rows, update calls over users of similar length, the handover cut.

Kept apart from stream/backfill.py (the job's steps: plan, read, apply, checkpoint, finish) so that one reads as
the job; this is how a chunk's events become new rows quickly. The state update itself is stream.apply's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from schemas.rows import SummaryRow
from stream.apply import ApplyResult, EventColumns, apply_events, user_positions
from stream.row_cache import RowCache

if TYPE_CHECKING:
    from models.vista import VistaModel
    from models.vocab import ItemVocab
    from stream.backfill import RowStore


def rows_for(events: EventColumns, cache: RowCache, store: RowStore,
             model_version: str) -> dict[str, SummaryRow | None]:
    """The stored rows of the events' users: from the cache, the rest in one concurrent read."""
    users = list(dict.fromkeys(events.users))
    rows: dict[str, SummaryRow | None] = {}
    missing = []
    for u in users:
        row = cache.get(u)
        if row is None:
            missing.append(u)
        else:
            rows[u] = row
    if missing:
        rows.update(store.read(missing, model_version))
    return rows


def out_of_order(events: EventColumns, rows: dict[str, SummaryRow | None]) -> int:
    """Events older than the same user's previous event (applied with time gap 0)."""
    last = {u: (r.last_ts if r is not None else -1) for u, r in rows.items()}
    count = 0
    for u, ts in zip(events.users, events.timestamps):
        if ts < last[u]:
            count += 1
        else:
            last[u] = ts
    return count


def apply_bucketed(model: VistaModel, vocab: ItemVocab, model_version: str, rows: dict[str, SummaryRow | None],
                   events: EventColumns, *, batch_cells: int, min_fill: float, batch_users: int,
                   seeds_dtype: Literal["float16", "int8q"]) -> ApplyResult:
    """apply_events over users of similar event counts at a time.

    One update call pads every user to the longest one; a log chunk mixes users with 1 and 500 events,
    so one call for the whole chunk spends most of its work on padding. Batch composition does not change
    any state (invariant 2), so this only changes speed and memory: the cell cap bounds the [B, T, H, d, d]
    scan tensors, the user cap the [B, K, 4D] seed intermediates of summarize.
    """
    grouped = user_positions(events)
    order = sorted(grouped, key=lambda u: len(grouped[u]), reverse=True)
    batches: list[list[str]] = []
    current: list[str] = []
    width = real = 0
    for user in order:
        n = len(grouped[user])
        cells = (len(current) + 1) * width
        if current and (cells > batch_cells or real + n < min_fill * cells or len(current) >= batch_users):
            batches.append(current)
            current, real = [], 0
        if not current:
            width = n
        current.append(user)
        real += n
    if current:
        batches.append(current)
    out = ApplyResult(rows=[])
    for users in batches:
        part = apply_events(model, vocab, model_version, {u: rows.get(u) for u in users},
                            events.take([i for u in users for i in grouped[u]]), seeds_dtype=seeds_dtype)
        out.rows.extend(part.rows)
        out.applied += part.applied
        out.skipped += part.skipped
        out.oov += part.oov
        for k, v in part.timings.items():
            out.timings[k] = out.timings.get(k, 0.0) + v
    return out


def stamp_cut(rows: list[SummaryRow], cut: dict[str, int]) -> None:
    """File sources: every row written holds the live topic's cut, so the worker skips what the file held."""
    for row in rows:
        for s, off in cut.items():
            row.applied_offsets[s] = max(row.applied_offsets.get(s, -1), off)
