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
    generation: int = Field(default=0, ge=0, description="not a column: the high part of the row's write "
                            "timestamp (generation * 2^32 + events_seen), read back from WRITETIME; a row continued "
                            "from another keeps its generation, a new or rebuilt one starts a later one")

    @property
    def write_timestamp(self) -> int:
        """Cassandra write timestamp: later states of a user's row always carry larger ones, so a stalled
        writer's late write of an older state never replaces a newer row (last write wins by timestamp)."""
        if not 0 <= self.events_seen < EVENTS_PER_GENERATION:
            raise ValueError(f"events_seen {self.events_seen} out of range for a write timestamp")
        return self.generation * EVENTS_PER_GENERATION + self.events_seen


EVENTS_PER_GENERATION = 2**32


def new_generation() -> int:
    """The generation of a row that starts from an empty state: the current time in microseconds / 2^32 (~72 min
    steps), so its timestamps sit where Cassandra's own (microseconds since the epoch) would."""
    import time

    return time.time_ns() // 1000 // EVENTS_PER_GENERATION
