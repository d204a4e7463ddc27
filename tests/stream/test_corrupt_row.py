"""A corrupt stored row is quarantined, not fatal: the worker logs and counts it, keeps it untouched for
inspection, sets its user's events aside and goes on with the partition (it used to crash, and crash again
on every restart). A backfill of that user from the topic rebuilds the row."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.settings import InfraSettings
from models.checkpoint import load_checkpoint
from schemas.events import InteractionEvent
from stream.apply import SourcedEvent, apply_events
from stream.backfill import BackfillSettings, run_backfill
from stream.producer import make_event_producer, send_events
from stream.sources import KafkaSource
from stream.store import ProgressStore, SummaryStore
from stream.worker import WorkerConfig
from tests.stream.util import assert_rows_match, new_topic, recompute, unique, worker_caught_up


@pytest.mark.integration
def test_a_corrupt_row_is_quarantined_and_rebuilt(infra_stack: InfraSettings, cassandra_session, checkpoint: Path,
                                                   ml100k_events: list[InteractionEvent]) -> None:
    model, vocab, meta = load_checkpoint(checkpoint)
    version = meta["model_version"]
    topic, dlq = new_topic(infra_stack, "corrupt", partitions=1), new_topic(infra_stack, "corrupt-dlq", partitions=1)
    events = list(ml100k_events[:400])
    victim = events[0].user_id
    store = SummaryStore(cassandra_session)
    # the victim's stored row, built from earlier events, then damaged: one byte of its state flipped
    earlier = [SourcedEvent(InteractionEvent(user_id=victim, item_id="1", action=1, timestamp=1), "old:0", 0)]
    row = apply_events(model, vocab, version, {}, earlier).rows[0]
    row.state = row.state[:-1] + bytes([row.state[-1] ^ 0xFF])
    store.write([row])

    producer = make_event_producer(infra_stack)
    try:
        assert send_events(producer, topic, events) == len(events)
    finally:
        producer.close()
    config = WorkerConfig(ckpt=checkpoint, topic=topic, dlq_topic=dlq, group_id=unique("group"), cold_start=True,
                          batch_max_events=120, batch_max_ms=50, metrics_port=0)
    with worker_caught_up(config, infra_stack) as worker:  # the partition went on
        victims_events = sum(e.user_id == victim for e in events)
        assert worker.metrics.quarantined._value.get() >= 1
        assert worker.metrics.events.labels("quarantined")._value.get() == victims_events
        assert worker.metrics.events.labels("applied")._value.get() == len(events) - victims_events
    others = [e for e in events if e.user_id != victim]
    expected = recompute(model, vocab, version, others)
    assert_rows_match(store.read(expected, version), expected, model)
    assert store.read([victim], version)[victim].state == row.state, "the corrupt row is kept for inspection"

    report = run_backfill(model, vocab, version, KafkaSource(infra_stack, topic), store, ProgressStore(cassandra_session),
                          settings=BackfillSettings(rebuild_users=[victim], progress_bar=False))
    assert report.status == "done" and report.users == 1
    rebuilt = recompute(model, vocab, version, [e for e in events if e.user_id == victim])
    assert_rows_match(store.read([victim], version), rebuilt, model)
