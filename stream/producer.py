"""Replay a dataset file into the `events` topic: the live-traffic generator for demos, tests, benchmarks.

The file is read by schemas.interactions, the reader training and the backfill use (bad records are left
out and logged, never repaired). Events go out in timestamp order (ties in file order: the same order
`models/training/data.py` gives each user's sequence), keyed by user id so one user's events stay in one
partition, in order. The producer is idempotent (no reordering on retries) and every send is acknowledged
before `replay` returns.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.events import InteractionEvent
from schemas.interactions import read_interactions

if TYPE_CHECKING:
    from kafka import KafkaProducer

    from infra.settings import InfraSettings


def load_events(path: str | Path, limit: int | None = None, user_prefix: str = "") -> list[InteractionEvent]:
    """A dataset file (MovieLens u.data, user_id,item_id,timestamp CSV, JSONL, Parquet) as validated events,
    sorted by timestamp (stable); the first `limit` of them. `user_prefix` namespaces user ids."""
    if limit is not None and limit < 0:
        raise ValueError("limit must be >= 0")
    rows = read_interactions(path)
    order = sorted(range(len(rows)), key=lambda i: rows[i].timestamp)
    if limit is not None:
        order = order[:limit]
    return [InteractionEvent(user_id=user_prefix + rows[i].user_id, item_id=rows[i].item_id, action=rows[i].action,
                             timestamp=rows[i].timestamp) for i in order]


def encode_event(event: InteractionEvent) -> tuple[bytes, bytes]:
    """(key, value) of an event on the wire: key = user id, value = compact JSON."""
    return event.user_id.encode(), event.model_dump_json(exclude_none=True).encode()


def make_event_producer(settings: InfraSettings, **overrides: object) -> KafkaProducer:
    """An idempotent, batching producer (acks=all; idempotence keeps per-partition order on retries)."""
    from infra.kafka import make_producer

    cfg: dict[str, object] = dict(enable_idempotence=True, linger_ms=20, batch_size=256 * 1024,
                                  compression_type=None)
    cfg.update(overrides)
    return make_producer(settings, **cfg)


def send_events(producer: KafkaProducer, topic: str, events: Iterable[InteractionEvent], *,
                rate: float | None = None, progress: bool = False, total: int | None = None) -> int:
    """Send events (at most `rate` per second when given); flush and check every send. Returns the count."""
    from stream.progress import Progress

    if rate is not None and rate <= 0:
        raise ValueError("rate must be > 0 events/s")
    futures = []
    start = time.monotonic()
    n = 0
    bar = Progress(f"produce -> {topic}", total=total, unit="ev", enabled=progress)
    for n, event in enumerate(_paced(events, rate, start), 1):
        key, value = encode_event(event)
        futures.append(producer.send(topic, key=key, value=value))
        if len(futures) >= 50_000:
            _settle(producer, futures)
        bar.update(1)
    bar.close()
    _settle(producer, futures)
    return n


def _paced(events: Iterable[InteractionEvent], rate: float | None, start: float) -> Iterator[InteractionEvent]:
    for i, event in enumerate(events):
        if rate is not None:
            ahead = start + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        yield event


def _settle(producer: KafkaProducer, futures: list) -> None:
    producer.flush()
    for f in futures:
        f.get(timeout=60)  # raises the send error, if any
    futures.clear()


def replay(settings: InfraSettings, path: str | Path, *, topic: str | None = None, rate: float | None = None,
           limit: int | None = None, user_prefix: str = "", progress: bool = True) -> int:
    """`vista produce`: read, order and send a dataset file; returns the number of events sent."""
    events = load_events(path, limit, user_prefix)
    producer = make_event_producer(settings)
    try:
        return send_events(producer, topic or settings.topic_events, events, rate=rate, progress=progress,
                           total=len(events))
    finally:
        producer.close()
