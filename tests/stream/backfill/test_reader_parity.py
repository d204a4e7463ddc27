"""Training's loader and the file backfill read through one reader: the same events and the same bad records
(location, reason, detail, raw), so offline metrics and served rows come from the same events."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from models.training.data import load_dataset
from schemas.source_keys import file_key, parse_partition_key, partition_key
from stream.sources import FileSource

JSONL = [{"user_id": 1, "item_id": "a", "timestamp": 5, "rating": 4},
         {"user_id": "1", "item_id": "b", "timestamp": 6, "rating": 1.5},
         {"user_id": "2", "item_id": "c"},
         {"user_id": "3", "item_id": "d", "timestamp": 9, "color": "red"}]
FILES: dict[str, bytes] = {
    "u.data": b"1\t10\t5\t100\n2\t11\t1.5\t101\nnot a line\n1\t12\t4\t10x\n\n3\t13\t1\t-5\n"
              b"1\t14\t2\t102.0\n4\t\xff\t1\t5\n",
    "log.csv": b"user_id,item_id,timestamp,rating\nu1,a,10,4\nu1,b,11,1.5\nu2,c,12\nu2,,13,1\nu3,d,14.0,2.0\n"
               b"u3,e,15,\n",
    "log.jsonl": b"".join(json.dumps(x).encode() + b"\n" for x in JSONL) + b"{broken\n",
}
EXPECTED_BAD = {
    "u.data": [("u.data:2", "wrong_type"), ("u.data:3", "wrong_field_count"), ("u.data:4", "wrong_type"),
               ("u.data:6", "out_of_range"), ("u.data:8", "bad_encoding")],
    "log.csv": [("log.csv:3", "wrong_type"), ("log.csv:4", "wrong_field_count"), ("log.csv:5", "out_of_range")],
    "log.jsonl": [("log.jsonl:2", "wrong_type"), ("log.jsonl:3", "missing_field"), ("log.jsonl:4", "unknown_field"),
                  ("log.jsonl:5", "malformed_json")],
}


def _flat(dataset) -> list[tuple[str, str, int, int]]:
    return sorted((s.user, i, a, t) for s in dataset.sequences for i, a, t in zip(s.items, s.actions, s.timestamps))


@pytest.mark.parametrize("name", sorted(FILES))
def test_training_and_the_backfill_read_the_same_events_and_bad_records(
        tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / name
    path.write_bytes(FILES[name])
    with caplog.at_level(logging.WARNING):
        dataset = load_dataset(path)
    chunks = list(FileSource(path).chunks({}, 2))
    assert dataset.bad == [b for c in chunks for b in c.bad]
    assert [(b.location, b.reason) for b in dataset.bad] == EXPECTED_BAD[name]
    backfilled = sorted((e.event.user_id, e.event.item_id, e.event.action, e.event.timestamp)
                        for c in chunks for e in c.events)
    assert _flat(dataset) == backfilled and backfilled
    assert f"{len(EXPECTED_BAD[name])} of " in caplog.text  # training says how many it left out


def test_parquet_reads_the_same_for_training_and_the_backfill(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"user_id": ["u1", "u2", "u1"], "item_id": ["a", "b", "c"], "timestamp": [1, 2, 3],
                             "rating": [4.0, 1.5, None]}), path, row_group_size=2)
    dataset = load_dataset(path)
    chunks = list(FileSource(path).chunks({}, 2))
    assert [(b.location, b.reason) for b in dataset.bad] == [("log.parquet:2", "wrong_type")]
    assert dataset.bad == [b for c in chunks for b in c.bad]
    assert _flat(dataset) == [("u1", "a", 4, 1), ("u1", "c", 0, 3)]


def test_a_rating_of_1_5_is_a_bad_record_not_a_1(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("user_id,item_id,timestamp,rating\nu,a,1,1.5\nu,b,2,1.0\n")
    (bad,) = [b for c in FileSource(path).chunks({}, 10) for b in c.bad]
    assert (bad.location, bad.reason, bad.raw) == ("r.csv:2", "wrong_type", "u,a,1,1.5")
    assert [(s.items, s.actions) for s in load_dataset(path).sequences] == [(["b"], [1])]


@pytest.mark.parametrize("topic,partition", [("events", 0), ("events.dlq", 11), ("a-b_c", 123456)])
def test_partition_keys_round_trip(topic: str, partition: int) -> None:
    key = partition_key(topic, partition)
    assert key == f"{topic}:{partition}" and parse_partition_key(key) == (topic, partition)


@pytest.mark.parametrize("key", ["events", "events:", ":3", "events:x", "events:-1", file_key("u.data")])
def test_anything_else_is_not_a_partition_key(key: str) -> None:
    with pytest.raises(ValueError, match="not a topic:partition key"):
        parse_partition_key(key)
