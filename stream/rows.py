"""Tensor <-> row conversion of stored summaries: what the worker, the backfill and the scorer share."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

import torch

from models.state import UserStates
from models.vista import UserSummary, VistaModel
from schemas.codec import decode_stack, encode_rows
from schemas.rows import SummaryRow, new_generation


def rows_from_states(
    user_ids: list[str],
    model_version: str,
    states: UserStates,
    summary: UserSummary,
    offsets: list[dict[str, int]] | None = None,
    seeds_dtype: Literal["float16", "int8q"] = "float16",
    generations: list[int | None] | None = None,
) -> list[SummaryRow]:
    """One row per user (row i <- states row i); `generations`: of the rows they continue (None: a new row,
    which starts a new generation; the default for all)."""
    now = datetime.now(timezone.utc)
    rows = []
    states = states.to("cpu")
    seeds = summary.seeds.detach().cpu() if summary.seeds is not None else None
    memory = encode_rows(states.memory, "float32")
    recent_items = encode_rows(states.recent_items, "int64")
    recent_h = encode_rows(states.recent_h, "float16")
    seed_blobs = encode_rows(seeds, seeds_dtype) if seeds is not None else None
    counts, lasts = states.count.tolist(), states.last_ts.tolist()
    fresh = new_generation()
    for i, user in enumerate(user_ids):
        count, last = counts[i], lasts[i]
        rows.append(SummaryRow(
            user_id=user,
            model_version=model_version,
            state=memory[i],
            n=float(count),
            last_ts=last,
            recent_items=recent_items[i],
            recent_h=recent_h[i],
            seeds=seed_blobs[i] if seed_blobs is not None else None,
            applied_offsets=dict(offsets[i]) if offsets else {},
            events_seen=count,
            last_event_ts=last if count else None,
            updated_at=now,
            generation=fresh if generations is None or generations[i] is None else generations[i],
        ))
    return rows


def states_from_rows(rows: list[SummaryRow]) -> UserStates:
    """Stack stored rows back into a state batch (what the worker continues from)."""
    if not rows:
        raise ValueError("no rows to decode")
    return UserStates(
        memory=decode_stack([r.state for r in rows]),
        count=torch.tensor([int(r.n) for r in rows], dtype=torch.long),
        last_ts=torch.tensor([r.last_ts for r in rows], dtype=torch.long),
        recent_items=decode_stack([r.recent_items for r in rows]).long(),
        recent_h=decode_stack([r.recent_h for r in rows]),
    )


def summary_from_rows(rows: list[SummaryRow], model: VistaModel | None = None) -> UserSummary:
    """What the scorer reads: the stored seeds (not recomputed; None where the rows hold none), the recent
    buffer, and for a `model` with the memory readout its operand M/n from the stored state (rows read with it)."""
    if not rows:
        raise ValueError("no rows to decode")
    stored = [r.seeds is not None for r in rows]
    if any(stored) and not all(stored):
        raise ValueError("rows of one batch disagree on whether they hold seeds")
    memory = None
    if model is not None and model.memory_read is not None:
        state = decode_stack([r.state for r in rows]).to(model.device)
        memory = model.read_operand(state, torch.tensor([int(r.n) for r in rows], device=model.device))
    return UserSummary(
        seeds=decode_stack([r.seeds for r in rows]) if all(stored) else None,
        recent_items=decode_stack([r.recent_items for r in rows]).long(),
        recent_h=decode_stack([r.recent_h for r in rows]),
        memory=memory,
    )
