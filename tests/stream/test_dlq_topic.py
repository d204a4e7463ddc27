"""The dead-letter topic is checked when the worker starts (created if missing, or a clear error naming it),
and a letter the DLQ refuses is counted and logged once, never retried: the partition goes on."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from infra.settings import InfraSettings
from schemas.events import InteractionEvent
from stream.producer import encode_event, make_event_producer
from stream.worker import Worker, WorkerConfig
from tests.stream.util import new_topic, unique, worker_caught_up

pytestmark = pytest.mark.integration


def test_a_missing_dlq_topic_is_created_at_start(infra_stack: InfraSettings, checkpoint: Path) -> None:
    from infra.kafka import make_admin

    topic, dlq = new_topic(infra_stack, "dlq-start", partitions=1), unique("dlq-missing")
    worker = Worker(WorkerConfig(ckpt=checkpoint, topic=topic, dlq_topic=dlq, metrics_port=0, cold_start=True),
                    infra_stack)
    try:
        admin = make_admin(infra_stack)
        try:
            assert dlq in admin.list_topics()
        finally:
            admin.close()
    finally:
        worker.close()


def test_a_dlq_topic_that_cannot_be_created_is_named_at_start(infra_stack: InfraSettings, checkpoint: Path) -> None:
    topic, dlq = new_topic(infra_stack, "dlq-start", partitions=1), "not a valid topic name!"
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="dead-letter topic 'not a valid topic name!'.*--dlq-topic"):
        Worker(WorkerConfig(ckpt=checkpoint, topic=topic, dlq_topic=dlq, metrics_port=0, cold_start=True),
               infra_stack)
    assert time.monotonic() - t0 < 30, "the error must come at start, not after a long block"


def test_a_letter_the_dlq_refuses_is_counted_and_the_partition_goes_on(
    infra_stack: InfraSettings, checkpoint: Path, ml100k_events: list[InteractionEvent]
) -> None:
    from kafka.admin import NewTopic

    from infra.kafka import make_admin

    topic, dlq = new_topic(infra_stack, "refused", partitions=1), unique("small-dlq")
    admin = make_admin(infra_stack)
    try:  # a DLQ whose records may not exceed 2 KB: the letter of a 20 KB event (kept whole) is refused
        admin.create_topics([NewTopic(dlq, 1, 1, topic_configs={"max.message.bytes": "2048"})])
    finally:
        admin.close()
    user = ml100k_events[0].user_id
    big = json.dumps({"user_id": user, "item_id": "50", "action": 1, "timestamp": 881250949,
                      "pad": "y" * 20_000}).encode()
    producer = make_event_producer(infra_stack)
    try:
        producer.send(topic, key=user.encode(), value=big)
        for event in ml100k_events[:30]:
            key, value = encode_event(event)
            producer.send(topic, key=key, value=value)
        producer.flush()
    finally:
        producer.close()
    config = WorkerConfig(ckpt=checkpoint, topic=topic, dlq_topic=dlq, group_id=unique("group"), cold_start=True,
                          batch_max_ms=50, max_event_bytes=16 * 1024)
    with worker_caught_up(config, infra_stack, timeout=60) as worker:
        assert worker.metrics.dlq_undeliverable._value.get() == 1
        assert worker.metrics.events.labels("applied")._value.get() == 30
        assert worker.metrics.retries.labels("dlq")._value.get() == 0, "a refused letter is never retried"
