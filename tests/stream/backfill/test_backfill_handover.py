"""Handover to the live worker (real Kafka, Cassandra and stream.worker.Worker): nothing lost, nothing twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.settings import InfraSettings
from models.checkpoint import load_checkpoint
from schemas.source_keys import partition_key
from stream.backfill import BackfillSettings, run_backfill
from stream.sources import FileSource, KafkaSource
from stream.store import ProgressStore, SummaryStore
from stream.worker import WorkerConfig
from tests.stream.util import assert_rows_match, end_offsets, new_topic, produce, recompute, unique, worker_caught_up

pytestmark = pytest.mark.integration


def _run_worker_to_end(settings: InfraSettings, checkpoint: Path, topic: str) -> dict[str, float]:
    """A worker of a new group (so it starts at the earliest offset) until it has committed the topic's end."""
    config = WorkerConfig(ckpt=checkpoint, topic=topic, dlq_topic=unique("dlq"), group_id=unique("group"),
                          batch_max_events=5000, batch_max_ms=100)
    with worker_caught_up(config, settings, timeout=300) as worker:
        return worker.totals()


def test_kafka_backfill_of_80_percent_then_the_worker_on_the_rest(
        infra_stack: InfraSettings, cassandra_session, checkpoint: Path, ml100k_events) -> None:
    events = ml100k_events
    cut = 80_000
    topic = new_topic(infra_stack, "backfill-kafka", partitions=4)
    produce(infra_stack, topic, events[:cut])
    model, vocab, meta = load_checkpoint(checkpoint)
    version = meta["model_version"]
    store, progress = SummaryStore(cassandra_session), ProgressStore(cassandra_session)

    report = run_backfill(model, vocab, version, KafkaSource(infra_stack, topic), store, progress,
                          settings=BackfillSettings(chunk_events=20_000, progress_bar=False))
    assert (report.status, report.events, report.applied, report.bad) == ("done", cut, cut, 0)
    shards = progress.read(report.job_id)
    ends = end_offsets(infra_stack, topic)
    assert {s: (p.status, p.position, p.end_position) for s, p in shards.items()} == {
        partition_key(topic, p): ("done", e - 1, e) for p, e in ends.items()}
    # the rows hold exactly the Kafka offsets the worker would have written
    backfilled = store.read({e.user_id for e in events[:cut]}, version)
    assert all(len(r.applied_offsets) == 1 and next(iter(r.applied_offsets)).startswith(f"{topic}:")
               for r in backfilled.values())

    produce(infra_stack, topic, events[cut:])  # live traffic after the backfill's end offsets
    totals = _run_worker_to_end(infra_stack, checkpoint, topic)
    assert totals["applied"] == len(events) - cut and totals["skipped"] == cut and totals["dlq"] == 0

    expected = recompute(model, vocab, version, events)
    assert_rows_match(store.read(expected, version), expected, model)
    # a rerun of the finished job reads nothing new (later records belong to the worker)
    again = run_backfill(model, vocab, version, KafkaSource(infra_stack, topic), store, progress,
                         settings=BackfillSettings(progress_bar=False))
    assert again.resumed and again.records == 0


def test_file_backfill_hands_over_at_the_recorded_cut(
        tmp_path: Path, infra_stack: InfraSettings, cassandra_session, checkpoint: Path, ml100k_events) -> None:
    """The file holds what the live topic had before the cut; the worker then replays the topic from its start."""
    history, live = ml100k_events[:12_000], ml100k_events[12_000:16_000]
    topic = new_topic(infra_stack, "backfill-handover", partitions=3)
    produce(infra_stack, topic, history)  # the producer has been publishing all along (retained in Kafka)
    log = tmp_path / "history.jsonl"
    log.write_text("".join(e.model_dump_json(exclude_none=True) + "\n" for e in history))
    model, vocab, meta = load_checkpoint(checkpoint)
    version = meta["model_version"]
    store = SummaryStore(cassandra_session)

    cut = {partition_key(topic, p): e for p, e in end_offsets(infra_stack, topic).items()}
    report = run_backfill(model, vocab, version, FileSource(log), store, ProgressStore(cassandra_session),
                          handover=cut, settings=BackfillSettings(chunk_events=5000, progress_bar=False))
    assert report.status == "done" and report.applied == len(history)
    assert report.handover == {s: e - 1 for s, e in cut.items()}
    rows = store.read({e.user_id for e in history}, version)
    assert all(r.applied_offsets[s] == e - 1 for r in rows.values() for s, e in cut.items())
    assert all(r.applied_offsets["file:history.jsonl"] >= 1 for r in rows.values())

    produce(infra_stack, topic, live)
    totals = _run_worker_to_end(infra_stack, checkpoint, topic)
    # the worker skipped the history it found in Kafka (it is in the rows already) and applied the rest
    assert totals["skipped"] == len(history) and totals["applied"] == len(live)
    expected = recompute(model, vocab, version, history + live)
    assert_rows_match(store.read(expected, version), expected, model)
