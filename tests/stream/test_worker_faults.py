"""Issue tests 2 and 3: a worker SIGKILLed mid-stream, and a rebalance between two workers, both with
live traffic. Each ends equal to a one-shot recompute, with every event applied exactly once (n exact)."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.settings import InfraSettings
from models.checkpoint import load_checkpoint
from schemas.events import InteractionEvent
from stream.store import SummaryStore
from tests.stream.util import (BackgroundProducer, CommitWatcher, WorkerProcess, assert_rows_match, end_offsets,
                               new_topic, recompute, unique)

pytestmark = pytest.mark.integration
ASSIGNED = '"partitions_assigned"'


def _wait_total(watcher: CommitWatcher, at_least: int, timeout: float, workers: list[WorkerProcess],
                producer: BackgroundProducer) -> int:
    """Wait until the group has committed `at_least` events; on failure say why (producer error, dead
    worker, or the workers' log tails), since a bare count says nothing on a CI machine."""
    import time

    deadline = time.monotonic() + timeout
    while (done := sum(watcher.committed().values())) < at_least:
        if producer.error is not None:
            raise AssertionError(f"the producer failed after {done} commits") from producer.error
        problem = None
        if not all(w.alive() for w in workers):
            problem = "a worker died"
        elif time.monotonic() > deadline:
            problem = f"only {done} of {at_least} events committed after {timeout}s"
        if problem:
            tails = "\n".join(f"--- {w.log_path.name}:\n{w.log()[-2500:]}" for w in workers)
            raise AssertionError(f"{problem} (producer sent {producer.sent}):\n{tails}")
        time.sleep(0.05)
    return done


def _check(cassandra_session, checkpoint: Path, events: list[InteractionEvent]) -> None:  # noqa: ANN001
    model, vocab, meta = load_checkpoint(checkpoint)
    expected = recompute(model, vocab, meta["model_version"], events)
    stored = SummaryStore(cassandra_session).read(expected, meta["model_version"])
    assert_rows_match(stored, expected, model)


def test_kill_9_mid_stream_then_restart_loses_nothing_and_applies_nothing_twice(
    infra_stack: InfraSettings, cassandra_session, checkpoint: Path, ml100k_events: list[InteractionEvent],
    tmp_path: Path,
) -> None:
    events = ml100k_events[:4000]
    topic, dlq, group = new_topic(infra_stack, "kill", 2), unique("dlq"), unique("group")
    watcher = CommitWatcher(infra_stack, topic, group)
    first = WorkerProcess(tmp_path / "worker1.log", checkpoint, topic, group, dlq)
    try:
        first.wait_log(ASSIGNED)
        producer = BackgroundProducer(infra_stack, topic, events, rate=1000)
        done = _wait_total(watcher, 1200, timeout=120, workers=[first], producer=producer)
        first.kill()  # SIGKILL: no chance to finish the batch or commit
        killed_at = sum(watcher.committed().values())
        assert killed_at < len(events), "the stream had already finished: the kill was not mid-stream"
        second = WorkerProcess(tmp_path / "worker2.log", checkpoint, topic, group, dlq)
        try:
            producer.join()
            watcher.wait_for(end_offsets(infra_stack, topic), timeout=120, alive=second.alive)
        finally:
            assert second.terminate() == 0
    finally:
        if first.alive():
            first.kill()
        watcher.close()
    totals = second.totals()
    # the restarted worker re-read everything after the last commit; what the killed one had already
    # written is skipped by the rows' applied offsets, the rest applied once
    assert totals["applied"] + totals["skipped"] == len(events) - killed_at
    print(f"killed with {done}..{killed_at} of {len(events)} events committed; restart: {totals}")
    _check(cassandra_session, checkpoint, events)

    # Redeliver everything (group offsets back to 0, as after a crash right after the writes): a worker
    # skips all of it by the rows' applied offsets and the rows stay as they were.
    _rewind_group(infra_stack, topic, group)
    third = WorkerProcess(tmp_path / "worker3.log", checkpoint, topic, group, dlq)
    watcher = CommitWatcher(infra_stack, topic, group)
    try:
        watcher.wait_for(end_offsets(infra_stack, topic), timeout=120, alive=third.alive)
    finally:
        assert third.terminate() == 0
        watcher.close()
    assert third.totals()["applied"] == 0 and third.totals()["skipped"] == len(events)
    _check(cassandra_session, checkpoint, events)


def _rewind_group(settings: InfraSettings, topic: str, group: str) -> None:
    """Commit offset 0 on every partition for `group` (no member is running)."""
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    from infra.kafka import make_consumer

    consumer = make_consumer(settings, group_id=group)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(parts)
        consumer.commit({tp: OffsetAndMetadata(0, "", -1) for tp in parts})
    finally:
        consumer.close(autocommit=False)


def test_rebalance_between_two_workers_gives_the_same_result(
    infra_stack: InfraSettings, cassandra_session, checkpoint: Path, ml100k_events: list[InteractionEvent],
    tmp_path: Path,
) -> None:
    events = ml100k_events[:4000]
    topic, dlq, group = new_topic(infra_stack, "rebalance", 4), unique("dlq"), unique("group")
    watcher = CommitWatcher(infra_stack, topic, group)
    a = WorkerProcess(tmp_path / "a.log", checkpoint, topic, group, dlq)
    b = WorkerProcess(tmp_path / "b.log", checkpoint, topic, group, dlq)
    b2 = None
    try:
        a.wait_log(ASSIGNED)
        b.wait_log(ASSIGNED)
        producer = BackgroundProducer(infra_stack, topic, events, rate=300)
        _wait_total(watcher, 1000, timeout=120, workers=[a, b], producer=producer)
        assert b.terminate() == 0  # SIGTERM: finishes its batch, commits, leaves the group
        assert '"worker_stopped"' in b.log()
        b2 = WorkerProcess(tmp_path / "b2.log", checkpoint, topic, group, dlq)
        b2.wait_log(ASSIGNED)  # joining triggers a second rebalance, with traffic still flowing
        rejoined_at = sum(watcher.committed().values())
        producer.join()
        watcher.wait_for(end_offsets(infra_stack, topic), timeout=120, alive=lambda: a.alive() and b2.alive())
    finally:
        rcs = [w.terminate() for w in (a, b, b2) if w is not None and w.alive()]
        watcher.close()
    assert all(rc == 0 for rc in rcs)
    assert a.log().count(ASSIGNED) >= 3, "worker a did not go through the rebalances"
    print(f"second worker rejoined with {rejoined_at} of {len(events)} events committed")
    _check(cassandra_session, checkpoint, events)


def test_a_paused_worker_waking_after_a_rebalance_overwrites_nothing(
    infra_stack: InfraSettings, cassandra_session, checkpoint: Path, ml100k_events: list[InteractionEvent],
    tmp_path: Path,
) -> None:
    """Two workers; one is frozen (SIGSTOP) mid-stream past the session timeout, so its partitions move to the
    other, then thawed: whatever batch it held is written late (a zombie write), and the fenced write
    timestamps keep the newer rows."""
    import os
    import signal
    import time

    events = ml100k_events[:4000]
    topic, dlq, group = new_topic(infra_stack, "zombie", 4), unique("dlq"), unique("group")
    watcher = CommitWatcher(infra_stack, topic, group)
    a = WorkerProcess(tmp_path / "a.log", checkpoint, topic, group, dlq)
    b = WorkerProcess(tmp_path / "b.log", checkpoint, topic, group, dlq)
    try:
        a.wait_log(ASSIGNED)
        b.wait_log(ASSIGNED)
        producer = BackgroundProducer(infra_stack, topic, events, rate=400)
        _wait_total(watcher, 800, timeout=120, workers=[a, b], producer=producer)
        os.kill(a.proc.pid, signal.SIGSTOP)
        time.sleep(10)  # > the 6 s session timeout: b takes every partition and goes on
        os.kill(a.proc.pid, signal.SIGCONT)
        producer.join()
        watcher.wait_for(end_offsets(infra_stack, topic), timeout=180, alive=lambda: a.alive() and b.alive())
    finally:
        rcs = [w.terminate() for w in (a, b) if w.alive()]
        watcher.close()
    assert all(rc == 0 for rc in rcs)
    _check(cassandra_session, checkpoint, events)
