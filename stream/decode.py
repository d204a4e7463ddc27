"""Kafka record -> validated SourcedEvent, or a dead letter with the reason (never an exception).

The one decoder of Kafka records: the live worker and the Kafka backfill (stream.sources.KafkaSource) both call
`decode_record`, so a bad record gets the same reason on both paths. It becomes the `reason` header of the DLQ
record and a metric label, or a line of the backfill's report. Reasons are those of schemas.bad_records:
    oversized, empty, malformed_json, missing_field, wrong_type, out_of_range, unknown_field, key_mismatch.

`decode_batch` is the worker's hot path: orjson parses each value, and a plainly valid event (the keys
user_id, item_id, timestamp and optionally action; string or integer ids without surrounding whitespace within
the length limit; integers in range; not in the future; the key matching) goes straight into columns. Every
other record goes through `decode_record`, which decides it, so a record is dead-lettered with the same reason
either way (tests/stream/test_decode_batch.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from schemas.bad_records import MAX_RAW_CHARS, BadRecord, InvalidRecord, validate_event_json
from schemas.events import MAX_ACTION, MAX_ID_LENGTH, MAX_TIMESTAMP
from schemas.source_keys import partition_key
from stream.apply import EventColumns, SourcedEvent

DEFAULT_MAX_EVENT_BYTES = 16 * 1024
DEFAULT_MAX_FUTURE_S = 86_400.0  # events stamped more than a day ahead of the clock are dead-lettered


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

    def as_bad_record(self) -> BadRecord:
        """As the backfill reports it: located at "topic:partition@offset", the start of the value as text."""
        raw = (self.value or b"")[:MAX_RAW_CHARS].decode("utf-8", errors="replace")
        return BadRecord(f"{partition_key(self.topic, self.partition)}@{self.offset}", self.reason, self.detail, raw)


def decode_record(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                  max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES, *,
                  max_future_s: float | None = DEFAULT_MAX_FUTURE_S) -> SourcedEvent | DeadLetter:
    """Validate one record's value as an InteractionEvent (JSON). An event stamped more than `max_future_s`
    after now (a clock or unit error: year 3000) is dead-lettered rather than applied, because a far-future
    timestamp would make every later real event of that user look out of order (None: no bound)."""

    def dead(reason: str, detail: str) -> DeadLetter:
        return DeadLetter(key, value, reason, detail[:500], topic, partition, offset)

    if value is None or len(value) == 0:
        return dead("empty", "record has no value")
    if len(value) > max_event_bytes:
        return dead("oversized", f"{len(value)} bytes > limit {max_event_bytes}")
    try:
        event = validate_event_json(value)
    except InvalidRecord as exc:
        return dead(exc.reason, exc.detail)
    if max_future_s is not None and event.timestamp > time.time() + max_future_s:
        return dead("future_timestamp", f"timestamp {event.timestamp} is more than {max_future_s:.0f} s after now")
    if key is not None and key != event.user_id.encode():
        # One user's events must stay in one partition, in order: a mis-keyed event could overtake others.
        return dead("key_mismatch", f"record key {key[:64]!r} != user_id {event.user_id[:64]!r}")
    return SourcedEvent(event, partition_key(topic, partition), offset)


_PLAIN_KEYS = ({"user_id", "item_id", "timestamp"}, {"user_id", "item_id", "timestamp", "action"})


def _plain_id(value: Any) -> str | None:
    if type(value) is int:
        value = str(value)
    elif type(value) is not str:
        return None
    if 0 < len(value) <= MAX_ID_LENGTH and not (value[0].isspace() or value[-1].isspace()):
        return value
    return None


def decode_batch(records: Iterable[Any], max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES, *,
                 max_future_s: float | None = DEFAULT_MAX_FUTURE_S) -> tuple[EventColumns, list[DeadLetter]]:
    """Kafka records (topic, partition, offset, key, value) -> the events as columns and the dead letters,
    exactly as `decode_record` decides each one, without a pydantic object per plain event."""
    events, letters = EventColumns(), []
    latest = time.time() + max_future_s if max_future_s is not None else None
    for r in records:
        value = r.value
        plain = None
        if value and len(value) <= max_event_bytes:
            try:
                data = orjson.loads(value)
            except orjson.JSONDecodeError:
                data = None
            if type(data) is dict and data.keys() in _PLAIN_KEYS:
                user, item = _plain_id(data["user_id"]), _plain_id(data["item_id"])
                ts, action = data["timestamp"], data.get("action", 0)
                if (user is not None and item is not None and type(ts) is int and type(action) is int
                        and 0 <= ts <= MAX_TIMESTAMP and 0 <= action <= MAX_ACTION
                        and (latest is None or ts <= latest) and (r.key is None or r.key == user.encode())):
                    plain = (user, item, action, ts)
        if plain is not None:
            events.append(*plain, partition_key(r.topic, r.partition), r.offset)
            continue
        out = decode_record(r.topic, r.partition, r.offset, r.key, value, max_event_bytes, max_future_s=max_future_s)
        if isinstance(out, DeadLetter):
            letters.append(out)
        else:
            events.add(out)
    return events, letters
