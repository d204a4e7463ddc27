"""Issue test 1: all of ML-100K through one worker equals a one-shot recompute of every user."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.settings import InfraSettings
from models.checkpoint import load_checkpoint
from schemas.events import InteractionEvent
from stream.producer import make_event_producer, send_events
from stream.store import SummaryStore
from stream.worker import WorkerConfig
from tests.stream.util import assert_rows_match, end_offsets, new_topic, recompute, unique, worker_caught_up

pytestmark = pytest.mark.integration


def test_ml100k_through_one_worker_equals_one_shot_recompute(
    infra_stack: InfraSettings, cassandra_session, checkpoint: Path, ml100k_events: list[InteractionEvent]
) -> None:
    topic = new_topic(infra_stack, "ml100k", partitions=4)
    group = unique("group")
    producer = make_event_producer(infra_stack)
    try:
        assert send_events(producer, topic, ml100k_events) == 100_000
    finally:
        producer.close()
    target = end_offsets(infra_stack, topic)
    assert sum(target.values()) == 100_000

    config = WorkerConfig(ckpt=checkpoint, topic=topic, dlq_topic=unique("dlq"), group_id=group, cold_start=True,
                          batch_max_events=5000, batch_max_ms=100)
    with worker_caught_up(config, infra_stack, timeout=300) as worker:
        applied = worker.metrics.events.labels("applied")._value.get()
        assert applied == 100_000 and worker.metrics.events.labels("dlq")._value.get() == 0

    model, vocab, meta = load_checkpoint(checkpoint)
    expected = recompute(model, vocab, meta["model_version"], ml100k_events)
    assert len(expected) == 943
    stored = SummaryStore(cassandra_session).read(expected, meta["model_version"])
    worst = assert_rows_match(stored, expected, model)
    print(f"worst errors vs one-shot recompute: {worst}")
    # every row remembers the last offset of its user's partition
    for row in stored.values():
        assert len(row.applied_offsets) == 1 and next(iter(row.applied_offsets)).startswith(topic + ":")
