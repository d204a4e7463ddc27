"""The dead-letter queue: bad records go to `events.dlq` with their original bytes and why.

Value and key are the source record's, unchanged up to `MAX_COPY_BYTES`; headers carry the reason, a
human-readable detail and the source coordinates, so an operator can fix and replay them. A larger record
(up to the broker's 1 MB) is sent as a truncated copy with its size and SHA-256 beside the coordinates:
re-sent whole with headers it would exceed the producer's request limit and never be accepted, which
stalled the partition behind it. `flush` must return before the worker commits the source offsets: a dead
letter is never lost either. A letter the broker still refuses as too large is counted and logged with
its coordinates, never retried forever.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING

from schemas.source_keys import partition_key
from stream.decode import DeadLetter

if TYPE_CHECKING:
    from kafka import KafkaProducer

HEADER_REASON = "dlq.reason"
HEADER_DETAIL = "dlq.detail"
HEADER_SOURCE = "dlq.source"  # "topic:partition"
HEADER_OFFSET = "dlq.offset"
HEADER_SIZE = "dlq.original_size"  # only on truncated copies
HEADER_SHA256 = "dlq.original_sha256"
MAX_COPY_BYTES = 64 * 1024  # value bytes kept in a dead letter; keys keep 1 KiB
MAX_KEY_BYTES = 1024

log = logging.getLogger("vista.dlq")


def dlq_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    return [
        (HEADER_REASON, letter.reason.encode()),
        (HEADER_DETAIL, letter.detail.encode()),
        (HEADER_SOURCE, partition_key(letter.topic, letter.partition).encode()),
        (HEADER_OFFSET, str(letter.offset).encode()),
    ]


def dlq_record(letter: DeadLetter) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of a dead letter: the original bytes, or a truncated copy plus a reference."""
    value = letter.value or b""
    headers = dlq_headers(letter)
    key = letter.key
    if len(value) > MAX_COPY_BYTES or (key is not None and len(key) > MAX_KEY_BYTES):
        headers += [(HEADER_SIZE, str(len(value)).encode()),
                    (HEADER_SHA256, hashlib.sha256(value).hexdigest().encode())]
        value = value[:MAX_COPY_BYTES]
        key = key[:MAX_KEY_BYTES] if key is not None else None
    return key, value, headers


def parse_headers(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """A DLQ record's headers as text (for tests, tools and replays)."""
    return {k: v.decode() for k, v in (headers or [])}


class DeadLetterQueue:
    """Publishes dead letters to one topic and waits for the broker's acknowledgement."""

    def __init__(self, producer: KafkaProducer, topic: str):
        self.producer = producer
        self.topic = topic
        self.undeliverable = 0  # letters the broker refused as too large: logged, counted, not retried

    def publish(self, letters: list[DeadLetter], timeout_s: float = 30.0) -> None:
        """Send every letter; return once all are acknowledged, raise if any failed (the caller retries the
        whole list: the DLQ is at-least-once, the source offsets are committed only after this returns)."""
        if not letters:
            return
        from kafka.errors import MessageSizeTooLargeError

        sent = []
        for letter in letters:
            key, value, headers = dlq_record(letter)
            try:
                sent.append((letter, self.producer.send(self.topic, key=key, value=value, headers=headers)))
            except MessageSizeTooLargeError as exc:  # refused before sending: retrying cannot help
                self._undeliverable(letter, exc)
        self.producer.flush(timeout=timeout_s)
        for letter, future in sent:
            try:
                future.get(timeout=timeout_s)
            except MessageSizeTooLargeError as exc:
                self._undeliverable(letter, exc)

    def _undeliverable(self, letter: DeadLetter, exc: Exception) -> None:
        self.undeliverable += 1
        log.error("dead letter refused as too large; source offset committed without it",
                  extra={"event": "dlq_undeliverable", "source": partition_key(letter.topic, letter.partition),
                         "offset": letter.offset, "reason": letter.reason, "size": len(letter.value or b""),
                         "error": str(exc)[:300]})

    def close(self) -> None:
        self.producer.close()
