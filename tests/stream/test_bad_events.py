"""Issue test 5: a mix of bad records all land in the DLQ with reasons and source offsets (original bytes
kept); the good events around them are applied; unseen item ids are counted as OOV, not rejected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.settings import InfraSettings
from models.checkpoint import load_checkpoint
from schemas.bad_records import BadRecord
from schemas.events import InteractionEvent
from schemas.source_keys import partition_key
from stream.decode import DeadLetter, decode_record
from stream.dlq import HEADER_OFFSET, HEADER_REASON, HEADER_SOURCE, parse_headers
from stream.producer import encode_event, make_event_producer
from stream.sources import KafkaSource
from stream.store import SummaryStore
from stream.worker import WorkerConfig
from tests.stream.util import assert_rows_match, new_topic, read_topic, recompute, unique, worker_caught_up

MAX_BYTES = 1024


def _ok(user: str = "u1", **changes: object) -> dict:
    return {"user_id": user, "item_id": "50", "action": 4, "timestamp": 881250949, **changes}


def bad_records(user: str) -> list[tuple[bytes | None, bytes | None, str]]:
    """(key, value, expected reason) of every kind of bad input."""
    k = user.encode()

    def j(obj: object) -> bytes:
        return json.dumps(obj).encode()

    return [
        (k, b'{"user_id": "' + k + b'", "item_id": ', "malformed_json"),
        (k, b"\xff\xfe not utf-8 \x00", "malformed_json"),
        (k, b"[1, 2, 3]", "malformed_json"),
        (k, j({"user_id": user, "item_id": "50", "action": 4}), "missing_field"),
        (k, j({"user_id": user, "timestamp": 1}), "missing_field"),
        (k, j(_ok(user, timestamp="yesterday")), "wrong_type"),
        (k, j(_ok(user, action=2.5)), "wrong_type"),
        (k, j(_ok(user, item_id=["a"])), "wrong_type"),
        (k, j(_ok(user, user_id=True)), "wrong_type"),
        (k, j(_ok(user, action=-1)), "out_of_range"),
        (k, j(_ok(user, action=256)), "out_of_range"),
        (k, j(_ok(user, timestamp=-5)), "out_of_range"),
        (k, j(_ok(user, timestamp=2**50)), "out_of_range"),
        (k, j(_ok(user, timestamp=32_503_680_000)), "future_timestamp"),  # the year 3000: a clock or unit error
        (k, j(_ok(user, item_id="")), "out_of_range"),
        (k, j(_ok(user, item_id="x" * 200)), "out_of_range"),
        (k, j(_ok(user, color="red")), "unknown_field"),
        (k, j(_ok(user, context={"pad": "y" * 2000})), "oversized"),
        (k, b"", "empty"),
        (b"someone-else", j(_ok(user)), "key_mismatch"),
    ]


@pytest.mark.parametrize("case", range(len(bad_records("u"))))
def test_each_bad_record_gets_its_reason(case: int) -> None:
    key, value, reason = bad_records("u")[case]
    out = decode_record("events", 3, 77, key, value, max_event_bytes=MAX_BYTES)
    assert isinstance(out, DeadLetter), out
    assert (out.reason, out.partition, out.offset, out.value, out.key) == (reason, 3, 77, value, key)
    assert out.detail


@pytest.mark.parametrize("case", range(len(bad_records("u"))))
def test_the_kafka_backfill_reports_a_bad_record_with_the_worker_s_reason(case: int) -> None:
    key, value, reason = bad_records("u")[case]
    letter = decode_record("events", 3, 77, key, value, max_event_bytes=MAX_BYTES)
    reported = KafkaSource(InfraSettings(), "events", max_event_bytes=MAX_BYTES).decode(3, 77, key, value)
    assert isinstance(reported, BadRecord), reported
    assert (reported.location, reported.reason, reported.detail) == ("events:3@77", reason, letter.detail)


def test_the_future_bound_is_configurable() -> None:
    year_3000 = json.dumps(_ok("7", timestamp=32_503_680_000)).encode()
    assert not isinstance(decode_record("events", 0, 1, b"7", year_3000, max_future_s=None), DeadLetter)
    assert decode_record("events", 0, 1, b"7", year_3000).reason == "future_timestamp"


def test_good_records_decode_and_ids_become_strings() -> None:
    out = decode_record("events", 0, 5, b"7", json.dumps(_ok(7, item_id=9)).encode())
    assert not isinstance(out, DeadLetter)
    assert (out.event.user_id, out.event.item_id, out.source, out.offset) == ("7", "9", "events:0", 5)
    assert not isinstance(decode_record("events", 0, 6, None, json.dumps(_ok("7")).encode()), DeadLetter)
    assert KafkaSource(InfraSettings(), "events").decode(0, 5, b"7", json.dumps(_ok(7, item_id=9)).encode()) == out


@pytest.mark.integration
def test_bad_events_go_to_the_dlq_and_good_ones_are_applied(
    infra_stack: InfraSettings, cassandra_session, checkpoint: Path, ml100k_events: list[InteractionEvent]
) -> None:
    topic, dlq = new_topic(infra_stack, "bad", partitions=2), new_topic(infra_stack, "bad-dlq", partitions=1)
    group = unique("group")
    good = list(ml100k_events[:600])
    good += [InteractionEvent(user_id=good[0].user_id, item_id="never-seen-item", action=1,
                              timestamp=good[-1].timestamp + 10)]  # OOV: applied through a hashed bucket
    bad = bad_records(good[0].user_id) + bad_records(good[1].user_id)
    producer = make_event_producer(infra_stack)
    sent_bad = []
    try:
        for i, event in enumerate(good):  # interleave: a bad record after every 20th good one
            producer.send(topic, key=encode_event(event)[0], value=encode_event(event)[1])
            if i % 20 == 0 and bad:
                key, value, reason = bad.pop()
                fut = producer.send(topic, key=key, value=value)
                sent_bad.append((key, value, reason, fut))
        for key, value, reason in bad:
            sent_bad.append((key, value, reason, producer.send(topic, key=key, value=value)))
        producer.flush()
        sent_bad = [(k, v, r, f.get(timeout=30)) for k, v, r, f in sent_bad]
    finally:
        producer.close()

    config = WorkerConfig(ckpt=checkpoint, topic=topic, dlq_topic=dlq, group_id=group, batch_max_events=97, cold_start=True,
                          batch_max_ms=50, max_event_bytes=MAX_BYTES)
    with worker_caught_up(config, infra_stack) as worker:
        assert worker.metrics.oov._value.get() == 1
        assert worker.metrics.events.labels("dlq")._value.get() == len(sent_bad)

    # The DLQ holds every bad record once, byte for byte, with its reason and source offset.
    letters = read_topic(infra_stack, dlq)
    assert len(letters) == len(sent_bad)
    by_source = {(parse_headers(m.headers)[HEADER_SOURCE], int(parse_headers(m.headers)[HEADER_OFFSET])): m
                 for m in letters}
    for key, value, reason, meta in sent_bad:
        letter = by_source[(partition_key(topic, meta.partition), meta.offset)]
        assert letter.value == value and letter.key == key
        assert parse_headers(letter.headers)[HEADER_REASON] == reason

    model, vocab, meta = load_checkpoint(checkpoint)
    expected = recompute(model, vocab, meta["model_version"], good)
    stored = SummaryStore(cassandra_session).read(expected, meta["model_version"])
    assert_rows_match(stored, expected, model)
