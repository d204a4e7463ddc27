"""Issue test 4: Cassandra stopped for ~30 s under live traffic, then started again. The worker pauses,
retries with capped backoff and commits nothing for unwritten work; afterwards the result equals a one-shot
recompute. Uses a private Cassandra (own ports and data dir) so the shared one stays up."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import cassandra
from infra.settings import InfraSettings
from schemas.events import InteractionEvent
from stream.producer import make_event_producer, send_events
from tests.infra_helpers import free_port
from tests.infra_helpers import private_cassandra as private_node
from tests.stream.util import CommitWatcher, WorkerProcess, assert_stored_rows_match, end_offsets, new_topic, unique

pytestmark = pytest.mark.integration
OUTAGE_S = 22  # plus the time Cassandra takes to start again (~7 s here): ~30 s without Cassandra


@pytest.fixture()
def private_cassandra(infra_stack: InfraSettings, tmp_path: Path) -> Iterator[InfraSettings]:
    with private_node(infra_stack, tmp_path / "private") as settings:
        yield settings


def _paused(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith("vista_worker_paused "))


def _send(settings: InfraSettings, topic: str, events: list[InteractionEvent]) -> None:
    producer = make_event_producer(settings)
    try:
        send_events(producer, topic, events)
    finally:
        producer.close()


def test_cassandra_outage_pauses_commits_nothing_and_recovers(
    private_cassandra: InfraSettings, checkpoint: Path, ml100k_events: list[InteractionEvent], tmp_path: Path
) -> None:
    settings = private_cassandra
    before, during = ml100k_events[:1500], ml100k_events[1500:3000]
    topic, dlq, group = new_topic(settings, "outage", 2), unique("dlq"), unique("group")
    port = free_port()
    env = {"VISTA_CASSANDRA_PORT": str(settings.cassandra_port), "VISTA_CASSANDRA_CONTACT_POINTS": "127.0.0.1",
           "VISTA_CASSANDRA_REQUEST_TIMEOUT_S": "5"}
    watcher = CommitWatcher(settings, topic, group)
    worker = WorkerProcess(tmp_path / "worker.log", checkpoint, topic, group, dlq, metrics_port=port, env=env)
    try:
        worker.wait_log('"partitions_assigned"')
        _send(settings, topic, before)
        watcher.wait_for(end_offsets(settings, topic), timeout=60, alive=worker.alive)
        committed_before = watcher.committed()

        t_down = time.monotonic()
        cassandra.stop(settings)
        _send(settings, topic, during)  # arrives while Cassandra is down: cannot be written
        worker.wait_log('"retrying"', timeout=30)
        assert _paused(port) == 1.0
        while time.monotonic() - t_down < OUTAGE_S:
            assert watcher.committed() == committed_before, "an offset was committed while Cassandra was down"
            assert worker.alive()
            time.sleep(0.5)
        cassandra.start(settings)
        outage = time.monotonic() - t_down
        watcher.wait_for(end_offsets(settings, topic), timeout=120, alive=worker.alive)
        recovered = time.monotonic() - t_down - outage
        assert _paused(port) == 0.0
    finally:
        rc = worker.terminate()
        watcher.close()
    assert rc == 0
    assert worker.totals()["applied"] == len(before) + len(during)
    print(f"Cassandra unreachable for {outage:.1f} s; caught up {recovered:.1f} s after it answered again")

    assert_stored_rows_match(settings, checkpoint, before + during)
