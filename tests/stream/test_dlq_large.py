"""An event near the broker's 1 MB limit goes to the DLQ as a truncated copy with a reference, and the
events after it are applied: re-sent whole with headers, it used to exceed the producer's request limit and
stall its partition forever."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from infra.settings import InfraSettings
from schemas.events import InteractionEvent
from stream.decode import DeadLetter
from stream.dlq import (
    HEADER_REASON,
    HEADER_SHA256,
    HEADER_SIZE,
    MAX_COPY_BYTES,
    dlq_record,
    parse_headers,
)
from stream.producer import encode_event, make_event_producer
from stream.worker import WorkerConfig
from tests.stream.util import new_topic, read_topic, unique, worker_caught_up


def test_a_large_letter_is_a_truncated_copy_with_its_size_and_hash() -> None:
    value = b"x" * 900_000
    key, copy, headers = dlq_record(DeadLetter(b"u1", value, "oversized", "900000 bytes", "events", 2, 41))
    found = parse_headers(headers)
    assert key == b"u1" and copy == value[:MAX_COPY_BYTES]
    assert found[HEADER_SIZE] == "900000" and found[HEADER_SHA256] == hashlib.sha256(value).hexdigest()
    small = dlq_record(DeadLetter(b"u1", b"{}", "missing_field", "d", "events", 2, 42))
    assert small[1] == b"{}" and HEADER_SIZE not in parse_headers(small[2]), "small letters stay whole"


@pytest.mark.integration
def test_a_near_1mb_event_never_wedges_the_worker(infra_stack: InfraSettings, checkpoint: Path,
                                                  ml100k_events: list[InteractionEvent]) -> None:
    topic, dlq = new_topic(infra_stack, "huge", partitions=1), new_topic(infra_stack, "huge-dlq", partitions=1)
    user = ml100k_events[0].user_id
    huge = json.dumps({"user_id": user, "item_id": "50", "action": 1, "timestamp": 881250949,
                       "pad": "y" * 900_000}).encode()
    producer = make_event_producer(infra_stack, max_request_size=1_048_576)
    try:
        producer.send(topic, key=user.encode(), value=huge).get(timeout=30)
        for event in ml100k_events[:50]:
            producer.send(topic, key=encode_event(event)[0], value=encode_event(event)[1])
        producer.flush()
    finally:
        producer.close()
    config = WorkerConfig(ckpt=checkpoint, topic=topic, dlq_topic=dlq, group_id=unique("group"), cold_start=True,
                          batch_max_ms=50)
    with worker_caught_up(config, infra_stack) as worker:
        assert worker.metrics.events.labels("dlq")._value.get() == 1
        assert worker.metrics.events.labels("applied")._value.get() == 50
    letters = read_topic(infra_stack, dlq)
    assert len(letters) == 1 and len(letters[0].value) == MAX_COPY_BYTES
    found = parse_headers(letters[0].headers)
    assert found[HEADER_REASON] == "oversized" and found[HEADER_SIZE] == str(len(huge))
