"""Scoring requests and responses, with explicit limits."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from schemas.events import Identifier

DEFAULT_MAX_CANDIDATES = 10_000


class ScoreRequest(BaseModel):
    """Rank `candidates` for `user_id`. Candidates must be non-empty and distinct; their number is capped
    (default 10,000; pass `context={"max_candidates": N}` to `model_validate` to change the cap)."""

    model_config = ConfigDict(extra="forbid")

    user_id: Identifier
    candidates: list[Identifier] = Field(min_length=1)
    top_k: int | None = Field(default=None, ge=1)
    request_id: str | None = Field(default=None, max_length=128, description="echoed back (Kafka correlation id)")

    @field_validator("candidates", mode="before")
    @classmethod
    def _ids_as_strings(cls, value: object) -> object:
        if isinstance(value, list):
            return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return value

    @field_validator("candidates")
    @classmethod
    def _limits(cls, value: list[str], info: ValidationInfo) -> list[str]:
        cap = (info.context or {}).get("max_candidates", DEFAULT_MAX_CANDIDATES)
        if len(value) > cap:
            raise ValueError(f"{len(value)} candidates exceed the limit of {cap}")
        if len(set(value)) != len(value):
            seen: set[str] = set()
            dups = sorted({v for v in value if v in seen or seen.add(v)})
            raise ValueError(f"duplicate candidates: {dups[:10]}")
        return value


class RankedItem(BaseModel):
    item_id: str
    score: float
    rank: int = Field(ge=1)
    known: bool = Field(description="False when the item was unseen in training (out-of-vocabulary bucket)")


class Freshness(BaseModel):
    """How current the summary behind a ranking is."""

    events_seen: int
    last_event_ts: int | None
    updated_at: datetime | None


class ScoreResponse(BaseModel):
    user_id: str
    model_version: str
    items: list[RankedItem]
    freshness: Freshness
    request_id: str | None = None
