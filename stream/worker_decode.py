"""Kafka record -> validated SourcedEvent, or a dead letter with the reason (never an exception).

The worker must keep going on any input, so decoding classifies every failure into a small, stable set
of reasons (they become the `reason` header of the DLQ record and a metric label):
    oversized, empty, malformed_json, missing_field, wrong_type, out_of_range, unknown_field, key_mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from schemas.events import InteractionEvent
from stream.apply import SourcedEvent

DEFAULT_MAX_EVENT_BYTES = 16 * 1024

_REASONS = {
    "json_invalid": "malformed_json",
    "json_type": "malformed_json",
    "model_type": "malformed_json",  # valid JSON that is not an object (a list, a number, ...)
    "missing": "missing_field",
    "extra_forbidden": "unknown_field",
    "greater_than_equal": "out_of_range",
    "less_than_equal": "out_of_range",
    "greater_than": "out_of_range",
    "less_than": "out_of_range",
    "string_too_short": "out_of_range",
    "string_too_long": "out_of_range",
    "too_long": "out_of_range",
}


@dataclass(frozen=True)
class DeadLetter:
    """A record that could not become an event: its original bytes, why, and where it came from."""

    key: bytes | None
    value: bytes | None
    reason: str
    detail: str
    topic: str
    partition: int
    offset: int


def source_of(topic: str, partition: int) -> str:
    """The idempotency source name of a Kafka partition (see stream/apply.py)."""
    return f"{topic}:{partition}"


def decode_record(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                  max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> SourcedEvent | DeadLetter:
    """Validate one record's value as an InteractionEvent (JSON)."""

    def dead(reason: str, detail: str) -> DeadLetter:
        return DeadLetter(key, value, reason, detail[:500], topic, partition, offset)

    if value is None or len(value) == 0:
        return dead("empty", "record has no value")
    if len(value) > max_event_bytes:
        return dead("oversized", f"{len(value)} bytes > limit {max_event_bytes}")
    try:
        event = InteractionEvent.model_validate_json(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        reason = _REASONS.get(first["type"], "wrong_type")
        where = ".".join(str(p) for p in first.get("loc", ())) or "<root>"
        return dead(reason, f"{where}: {first['msg']}")
    if key is not None and key != event.user_id.encode():
        # One user's events must stay in one partition, in order: a mis-keyed event could overtake others.
        return dead("key_mismatch", f"record key {key[:64]!r} != user_id {event.user_id[:64]!r}")
    return SourcedEvent(event, source_of(topic, partition), offset)
