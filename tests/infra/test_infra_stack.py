"""The shared local stack (``infra_stack``): Kafka and Cassandra, real servers."""

from __future__ import annotations

import os
import time
import uuid
from typing import TYPE_CHECKING

import pytest

from infra import cassandra, kafka, local

if TYPE_CHECKING:
    from cassandra.cluster import Session

    from infra.settings import InfraSettings

pytestmark = pytest.mark.integration


def test_vista_topics_exist_with_configured_partitions(infra_stack: InfraSettings) -> None:
    admin = kafka.make_admin(infra_stack)
    try:
        metas = {kafka._topic_name(m): m for m in admin.describe_topics(list(infra_stack.topic_partitions))}
    finally:
        admin.close()
    for name, partitions in infra_stack.topic_partitions.items():
        assert len(metas[name]["partitions"]) == partitions, name


def test_produce_and_consume_keyed_messages(infra_stack: InfraSettings) -> None:
    topic = f"test-keyed-{uuid.uuid4().hex[:8]}"
    kafka.ensure_topics(infra_stack, {topic: 3})
    try:
        producer = kafka.make_producer(infra_stack)
        sent = [(f"user-{i % 4}".encode(), f"event-{i}".encode()) for i in range(20)]
        partition_of: dict[bytes, set[int]] = {}
        for key, value in sent:
            meta = producer.send(topic, key=key, value=value).get(timeout=30)
            partition_of.setdefault(key, set()).add(meta.partition)
        producer.flush()
        producer.close()
        # A key always lands in the same partition (per-user ordering).
        assert all(len(parts) == 1 for parts in partition_of.values())

        consumer = kafka.make_consumer(infra_stack, topic, group_id=f"test-{uuid.uuid4().hex[:8]}")
        received: list[tuple[bytes, bytes, int]] = []
        deadline = time.monotonic() + 60
        while len(received) < len(sent) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                received.extend((r.key, r.value, r.partition) for r in records)
        consumer.commit()
        consumer.close()
        assert sorted((k, v) for k, v, _ in received) == sorted(sent)
        for key, _, partition in received:
            assert partition_of[key] == {partition}
        # Per key, consumption order is production order.
        for key in partition_of:
            got = [v for k, v, _ in received if k == key]
            assert got == [v for k, v in sent if k == key]
    finally:
        admin = kafka.make_admin(infra_stack)
        admin.delete_topics([topic])
        admin.close()


def test_blob_row_roundtrip_with_prepared_statements(infra_stack: InfraSettings, cassandra_session: Session) -> None:
    user = f"test-user-{uuid.uuid4().hex[:8]}"
    state = os.urandom(4096) + b"\x00" * 16  # arbitrary bytes, NULs included
    insert = cassandra_session.prepare(
        "INSERT INTO user_summaries (user_id, model_version, state, n, last_ts, recent_items, recent_h, seeds,"
        " applied_offsets, events_seen, last_event_ts, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, toTimestamp(now()))"
    )
    select = cassandra_session.prepare(
        "SELECT state, n, last_ts, recent_items, applied_offsets, events_seen, updated_at"
        " FROM user_summaries WHERE user_id = ? AND model_version = ?"
    )
    try:
        cassandra_session.execute(
            insert,
            (
                user,
                "v1",
                state,
                12.5,
                1_700_000_000_000,
                b"\x01\x02",
                b"",
                b"seed",
                {"events:3": 41},
                13,
                1_700_000_000_500,
            ),
        )
        row = cassandra_session.execute(select, (user, "v1")).one()
        assert row is not None
        assert row.state == state
        assert row.n == 12.5 and row.last_ts == 1_700_000_000_000 and row.events_seen == 13
        assert row.recent_items == b"\x01\x02"
        assert dict(row.applied_offsets) == {"events:3": 41}
        assert row.updated_at is not None
        # Map entries merge per key: how a worker records a new partition offset.
        cassandra_session.execute(
            "UPDATE user_summaries SET applied_offsets = applied_offsets + %s"
            " WHERE user_id = %s AND model_version = %s",
            ({"events:5": 7}, user, "v1"),
        )
        row = cassandra_session.execute(select, (user, "v1")).one()
        assert dict(row.applied_offsets) == {"events:3": 41, "events:5": 7}
        assert cassandra_session.execute(select, (user, "v2")).one() is None
    finally:
        cassandra_session.execute("DELETE FROM user_summaries WHERE user_id = %s", (user,))


def test_backfill_progress_table(cassandra_session: Session) -> None:
    job = f"test-job-{uuid.uuid4().hex[:8]}"
    upsert = cassandra_session.prepare(
        "INSERT INTO backfill_progress"
        " (job_id, shard, model_version, source, position, events, users, status, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, toTimestamp(now()))"
    )
    try:
        for shard in ("0", "1"):
            cassandra_session.execute(upsert, (job, shard, "v1", "file:///x.parquet", 100, 1000, 10, "running"))
        cassandra_session.execute(upsert, (job, "1", "v1", "file:///x.parquet", 200, 2000, 20, "done"))
        rows = list(
            cassandra_session.execute("SELECT shard, position, status FROM backfill_progress WHERE job_id = %s", (job,))
        )
        assert [(r.shard, r.position, r.status) for r in rows] == [("0", 100, "running"), ("1", 200, "done")]
    finally:
        cassandra_session.execute("DELETE FROM backfill_progress WHERE job_id = %s", (job,))


def test_status_reports_both_ready(infra_stack: InfraSettings) -> None:
    report = local.status(infra_stack)
    assert report["kafka"]["ready"], report
    assert report["cassandra"]["ready"], report
    for name in ("kafka", "cassandra"):
        if report[name]["pid"] is not None:
            assert report[name]["rss_mb"] > 0


def test_up_is_idempotent(infra_stack: InfraSettings) -> None:
    pids = {"kafka": kafka.running_pid(infra_stack), "cassandra": cassandra.running_pid(infra_stack)}
    if None in pids.values():
        pytest.skip(f"the stack in use is not run by `vista infra up` from {infra_stack.data_dir} (pids {pids})")
    t0 = time.monotonic()
    report = local.up(infra_stack)
    assert time.monotonic() - t0 < 30
    assert report["kafka"] == {**report["kafka"], "started": False, "pid": pids["kafka"]}
    assert report["cassandra"] == {**report["cassandra"], "started": False, "pid": pids["cassandra"]}
    assert report["fetch"] == {"kafka": 0.0, "cassandra": 0.0}
    assert report["init"]["topics_created"] == []
    # Schema and topics again: still a no-op.
    assert local.init_schema_and_topics(infra_stack)["topics_created"] == []
