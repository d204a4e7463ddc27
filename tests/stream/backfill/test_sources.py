"""File sources: formats, line-number offsets, bad lines with their line numbers, resuming by byte offset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas.interaction_formats import detect_format
from stream.sources import FileSource, Position


def _read_all(src: FileSource, chunk: int = 3, start: Position | None = None):
    events, bad, positions = [], [], []
    for c in src.chunks({src.shard: start} if start else {}, chunk):
        events += c.events
        bad += c.bad
        positions.append(c.positions[src.shard])
    return events, bad, positions


def test_movielens_offsets_are_line_numbers_and_bad_lines_are_located(tmp_path: Path) -> None:
    path = tmp_path / "u.data"
    path.write_text("1\t10\t5\t100\n2\t11\t3\t101\nnot a line\n1\t12\t4\t10x\n\n3\t13\t1\t-5\n1\t14\t2\t102.0\n")
    assert detect_format(path) == "movielens"
    src = FileSource(path)
    events, bad, positions = _read_all(src, chunk=2)
    assert [(e.source, e.offset, e.event.user_id, e.event.item_id) for e in events] == [
        ("file:u.data", 1, "1", "10"), ("file:u.data", 2, "2", "11"), ("file:u.data", 7, "1", "14")]
    assert events[2].event.timestamp == 102 and events[0].event.action == 5
    assert [(b.location, b.reason) for b in bad] == [
        ("u.data:3", "wrong_field_count"), ("u.data:4", "wrong_type"), ("u.data:6", "out_of_range")]
    assert positions[-1].position == 7 and positions[-1].byte_offset == path.stat().st_size


def test_resume_from_a_chunk_position_reads_exactly_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp,rating\n" + "".join(f"u{i % 3},i{i},{1000 + i},{i % 5}\n" for i in range(20)))
    src = FileSource(path)
    assert src.fmt == "csv"
    everything, _, _ = _read_all(src, chunk=100)
    assert [e.offset for e in everything] == list(range(2, 22))  # line 1 is the header
    first = next(iter(src.chunks({}, 7)))
    assert first.positions[src.shard].position == 8
    rest, _, _ = _read_all(src, chunk=4, start=first.positions[src.shard])
    assert [e.offset for e in list(first.events) + rest] == [e.offset for e in everything]
    assert [e.event for e in list(first.events) + rest] == [e.event for e in everything]
    # a finished file read again from its end position yields nothing
    last = list(src.chunks({}, 100))[-1].positions[src.shard]
    assert list(src.chunks({src.shard: last}, 100)) == []


def test_headerless_csv_jsonl_and_parquet(tmp_path: Path) -> None:
    plain = tmp_path / "plain.csv"
    plain.write_text("7,100,5\n7,101,6,2\n8,102,7\n")
    events, bad, _ = _read_all(FileSource(plain, "csv"))
    assert [e.event.item_id for e in events] == ["100", "102"] and [b.location for b in bad] == ["plain.csv:2"]

    jl = tmp_path / "log.jsonl"
    lines = [{"user_id": 1, "item_id": "a", "timestamp": 5, "rating": 4}, {"user_id": "2", "item_id": "b"},
             {"user_id": "3", "item_id": "c", "timestamp": 9, "action": 1, "extra": 1}]
    jl.write_text("\n".join(json.dumps(x) for x in lines) + "\n{broken\n")
    events, bad, _ = _read_all(FileSource(jl))
    assert [(e.event.user_id, e.event.action, e.offset) for e in events] == [("1", 4, 1)]
    assert [(b.location, b.reason) for b in bad] == [
        ("log.jsonl:2", "missing_field"), ("log.jsonl:3", "unknown_field"), ("log.jsonl:4", "malformed_json")]

    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq_path = tmp_path / "log.parquet"
    table = pa.table({"user_id": ["u1", "u2", "u1", "u3"], "item_id": ["a", "b", "c", "d"],
                      "timestamp": [1, 2, 3, -4], "action": [1, 0, 2, 1]})
    pq.write_table(table, pq_path, row_group_size=2)
    src = FileSource(pq_path)
    assert src.fmt == "parquet" and src.total_records() == 4
    events, bad, positions = _read_all(src, chunk=2)
    assert [(e.event.user_id, e.event.item_id, e.offset) for e in events] == [("u1", "a", 1), ("u2", "b", 2), ("u1", "c", 3)]
    assert [(b.location, b.reason) for b in bad] == [("log.parquet:4", "out_of_range")]
    resumed, _, _ = _read_all(src, chunk=3, start=Position(1))
    assert [e.offset for e in resumed] == [2, 3]


def test_unknown_format_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "mystery.txt"
    path.write_text("hello world\n")
    with pytest.raises(ValueError, match="cannot detect the format"):
        FileSource(path)
    with pytest.raises(FileNotFoundError):
        FileSource(tmp_path / "missing.data")
