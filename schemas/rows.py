"""The stored summary row (one per user and model_version), as Cassandra's `user_summaries` holds it.

The ground floor: no model code. Tensor <-> row conversion lives next to its users, in stream/rows.py.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class SummaryRow(BaseModel):
    """Mirrors the Cassandra table `user_summaries` (see infra/cql)."""

    model_config = ConfigDict(extra="forbid")

    user_id: str
    model_version: str
    state: bytes = Field(description="memory blob [L, H, d, d] fp32")
    n: float = Field(description="events applied (the normalizer's count)")
    last_ts: int = Field(description="timestamp of the newest applied event, -1 if none")
    recent_items: bytes = Field(description="ring buffer item rows [R] int64, newest last, 0 = empty")
    recent_h: bytes = Field(description="ring buffer h^L [R, D] fp16")
    seeds: bytes | None = Field(default=None, description="summary [K, D] fp16 (or int8q); None for a model "
                                "without the target readout, whose scorer never reads seeds")
    applied_offsets: dict[str, int] = Field(default_factory=dict, description="'topic:partition' -> last applied offset")
    events_seen: int
    last_event_ts: int | None = None
    updated_at: datetime | None = None
