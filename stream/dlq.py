"""The dead-letter queue: bad records go to `events.dlq` with their original bytes and why.

Value and key are the source record's, unchanged; headers carry the reason, a human-readable detail
and the source coordinates, so an operator can fix and replay them. `flush` must return before the
worker commits the source offsets: a dead letter is never lost either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from schemas.source_keys import partition_key
from stream.decode import DeadLetter

if TYPE_CHECKING:
    from kafka import KafkaProducer

HEADER_REASON = "dlq.reason"
HEADER_DETAIL = "dlq.detail"
HEADER_SOURCE = "dlq.source"  # "topic:partition"
HEADER_OFFSET = "dlq.offset"


def dlq_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    return [
        (HEADER_REASON, letter.reason.encode()),
        (HEADER_DETAIL, letter.detail.encode()),
        (HEADER_SOURCE, partition_key(letter.topic, letter.partition).encode()),
        (HEADER_OFFSET, str(letter.offset).encode()),
    ]


def parse_headers(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """A DLQ record's headers as text (for tests, tools and replays)."""
    return {k: v.decode() for k, v in (headers or [])}


class DeadLetterQueue:
    """Publishes dead letters to one topic and waits for the broker's acknowledgement."""

    def __init__(self, producer: KafkaProducer, topic: str):
        self.producer = producer
        self.topic = topic

    def publish(self, letters: list[DeadLetter], timeout_s: float = 30.0) -> None:
        """Send every letter; return once all are acknowledged, raise if any failed (the caller retries the
        whole list: the DLQ is at-least-once, the source offsets are committed only after this returns)."""
        if not letters:
            return
        futures = [self.producer.send(self.topic, key=letter.key, value=letter.value or b"",
                                      headers=dlq_headers(letter)) for letter in letters]
        self.producer.flush(timeout=timeout_s)
        for future in futures:
            future.get(timeout=timeout_s)

    def close(self) -> None:
        self.producer.close()
