"""Scoring requests and responses, with explicit limits."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

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
    ranker: str = Field(default="stack", description="what ordered the items: 'stack' (u·e) or "
                        "'stack+target-attention' (u·e + Δ on the reranked candidates, which rank first)")
    cold_start: bool = Field(default=False, description="the user has no stored row under this model_version "
                             "(never seen, or not backfilled yet): ranked from an empty history")
    reranked: int = Field(default=0, ge=0, description="how many candidates Δ reranked (a longer list is "
                          "served as retrieve-then-rank: u·e orders all, Δ reorders its top N)")


def validation_detail(exc: ValidationError) -> tuple[str, list[dict[str, Any]]]:
    """A one-line message and the per-field list of a pydantic error (input values left out)."""
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    message = "; ".join(f"{'.'.join(map(str, d['loc'])) or 'body'}: {d['msg']}" for d in detail)
    return message, detail


def parse_request(body: bytes, max_candidates: int) -> ScoreRequest:
    """JSON bytes -> ScoreRequest under this service's cap; raises ValueError with a clear message."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object {user_id, candidates, top_k?}")
    return ScoreRequest.model_validate(data, context={"max_candidates": max_candidates})
