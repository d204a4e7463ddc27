"""Model rollouts lose nothing silently: a worker refuses a model version that was never backfilled (unless
told to cold-start), and each version consumes in a group of its own, so two versions side by side both see
every event."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from infra.settings import InfraSettings
from models.checkpoint import load_checkpoint
from stream.store import ProgressStore, ShardProgress
from stream.worker import Worker, WorkerConfig
from tests.stream.util import new_topic, unique

pytestmark = pytest.mark.integration


def test_a_version_without_a_finished_backfill_is_refused(infra_stack: InfraSettings, checkpoint: Path) -> None:
    topic = new_topic(infra_stack, "versions", partitions=1)
    config = WorkerConfig(ckpt=checkpoint, topic=topic, dlq_topic=unique("dlq"), metrics_port=0)
    with pytest.raises(RuntimeError, match="has no finished backfill.*--cold-start"):
        Worker(config, infra_stack)


def test_the_default_group_is_per_version(infra_stack: InfraSettings, checkpoint: Path) -> None:
    topic = new_topic(infra_stack, "versions", partitions=1)
    version = load_checkpoint(checkpoint)[2]["model_version"]
    worker = Worker(WorkerConfig(ckpt=checkpoint, topic=topic, dlq_topic=unique("dlq"), metrics_port=0,
                                 cold_start=True), infra_stack)
    try:
        assert worker.group_id == f"vista-workers-{version}"
    finally:
        worker.close()


def test_a_sharded_backfill_counts_once_every_shard_is_done(cassandra_session) -> None:
    progress = ProgressStore(cassandra_session)
    version = f"test-{uuid.uuid4().hex}"
    base = f"{version}/file:log.data"
    progress.write(f"{base}#shard0of2", [ShardProgress("file:log.data", status="done", model_version=version)])
    progress.write(f"{base}#shard1of2", [ShardProgress("file:log.data", status="running", model_version=version)])
    assert progress.finished_jobs(version) == []
    progress.write(f"{base}#shard1of2", [ShardProgress("file:log.data", status="done", model_version=version)])
    assert progress.finished_jobs(version) == [f"{base}#shard0of2", f"{base}#shard1of2"]
    progress.write(f"{version}/kafka:events", [ShardProgress("events:0", status="done", model_version=version),
                                               ShardProgress("events:1", status="running", model_version=version)])
    assert f"{version}/kafka:events" not in progress.finished_jobs(version)
