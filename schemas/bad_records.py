"""Why input is not an InteractionEvent: one small, stable set of reasons for files and Kafka alike.

The reason names a bad record in the worker's DLQ header and metric label, in the backfill's report and in
training's loader, so the same bad input is labelled the same way everywhere:
    malformed_json, missing_field, wrong_type, out_of_range, unknown_field   (validation, files and Kafka)
    wrong_field_count, bad_encoding                                          (file lines)
    empty, oversized, key_mismatch                                           (Kafka records)
Bad input is reported, never repaired: a rating of 1.5 is `wrong_type`, not 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import ValidationError

from schemas.events import InteractionEvent

MAX_RAW_CHARS = 200  # of a bad record's text kept in reports

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
class BadRecord:
    """A record that could not become an event: where ("u.data:17", "events:3@120"), why, and its text."""

    location: str
    reason: str
    detail: str
    raw: str


class InvalidRecord(ValueError):
    """Raised by the parsers; `reason` is one of the labels above, the message is the human-readable detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def reason_of(exc: ValidationError) -> InvalidRecord:
    """The reason and detail of a failed InteractionEvent validation (its first error)."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "<root>"
    return InvalidRecord(_REASONS.get(first["type"], "wrong_type"), f"{where}: {first['msg']}")


def validate_event(fields: Mapping[str, object]) -> InteractionEvent:
    """An event from already-split fields (a file line, a Parquet row); InvalidRecord if they are not one."""
    try:
        return InteractionEvent.model_validate(fields)
    except ValidationError as exc:
        raise reason_of(exc) from None


def validate_event_json(value: bytes | str) -> InteractionEvent:
    """An event from its JSON text (a Kafka record value); InvalidRecord if it is not one."""
    try:
        return InteractionEvent.model_validate_json(value)
    except ValidationError as exc:
        raise reason_of(exc) from None
