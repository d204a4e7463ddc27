"""Backfill sources: historical logs read in bounded-memory chunks of validated, offset-carrying events.

Every event gets a source and an offset for `stream.apply` (invariant 4):
    file   source "file:<file name>", offset = the 1-based line number (Parquet: row number; a CSV
           header is line 1), so a row records the last line of the file it includes;
    Kafka  source "<topic>:<partition>", offset = the Kafka offset — exactly what the live worker uses,
           so the worker skips every event a backfilled row already holds.
A source resumes from a `Position` (the last record already included), reads each record once, and
never holds more than one chunk of events. Bad records are returned with their location and reason,
never raised: the caller counts them and decides when there are too many.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import ValidationError

from schemas.events import InteractionEvent
from stream.apply import SourcedEvent

if TYPE_CHECKING:
    from infra.settings import InfraSettings

FileFormat = Literal["movielens", "csv", "jsonl", "parquet"]
FORMATS: tuple[str, ...] = ("movielens", "csv", "jsonl", "parquet")
MAX_RAW_CHARS = 200
CSV_COLUMNS = ("user_id", "item_id", "timestamp", "action")


@dataclass(frozen=True)
class BadRecord:
    """A record that could not become an event: where ("u.data:17", "events:3@120"), why, and its text."""

    location: str
    reason: str
    detail: str
    raw: str


@dataclass
class Position:
    """Last record already included in one shard (-1: none). `byte_offset` lets a file resume by seeking."""

    position: int = -1
    byte_offset: int = 0


@dataclass
class Chunk:
    """Events in source order, the bad records among them, and each shard's position after the chunk."""

    events: list[SourcedEvent]
    bad: list[BadRecord]
    records: int
    positions: dict[str, Position]
    bytes_read: int = 0


def _int(text: str, name: str) -> int:
    """An integer field; '881250949.0' is accepted, '1.5' is not (it would silently round)."""
    try:
        return int(text)
    except ValueError:
        value = float(text)
        if not value.is_integer():
            raise ValueError(f"{name} {text!r} is not an integer") from None
        return int(value)


class BadLine(ValueError):
    """A line that cannot be parsed; `reason` is a short stable label for the report."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def _reason_of(exc: ValidationError) -> tuple[str, str]:
    first = exc.errors()[0]
    kind = first["type"]
    reason = {"missing": "missing_field", "extra_forbidden": "unknown_field", "json_invalid": "malformed_json",
              "model_type": "malformed_json"}.get(kind, "out_of_range" if "than" in kind or "too_" in kind
                                                   or "string_too" in kind else "wrong_type")
    where = ".".join(str(p) for p in first.get("loc", ())) or "<root>"
    return reason, f"{where}: {first['msg']}"


def detect_format(path: Path) -> FileFormat:
    """From the suffix (.parquet, .jsonl/.json) or the first line (JSON object, 4 tab-separated fields, commas)."""
    if path.suffix in (".parquet", ".pq"):
        return "parquet"
    with path.open("rb") as fh:
        first = fh.readline().decode("utf-8", errors="replace")
    if path.suffix in (".jsonl", ".json") or first.lstrip().startswith("{"):
        return "jsonl"
    if len(first.rstrip("\r\n").split("\t")) == 4:
        return "movielens"
    if "," in first:
        return "csv"
    raise ValueError(f"{path}: cannot detect the format (expected MovieLens u.data, a "
                     "user_id,item_id,timestamp[,action] CSV, JSONL or Parquet); pass the format explicitly")


class FileSource:
    """A log file replayed in file order (the order events are applied to each user)."""

    kind = "file"

    def __init__(self, path: str | Path, fmt: FileFormat | None = None, name: str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"backfill source not found: {self.path}")
        self.fmt: FileFormat = fmt or detect_format(self.path)
        if self.fmt not in FORMATS:
            raise ValueError(f"unknown format {self.fmt!r}; one of {', '.join(FORMATS)}")
        self.name = name or self.path.name
        self.shard = f"file:{self.name}"

    @property
    def description(self) -> str:
        return f"{self.fmt} file {self.path}"

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def total_records(self) -> int | None:
        """Known without reading the file only for Parquet."""
        if self.fmt != "parquet":
            return None
        import pyarrow.parquet as pq

        return pq.ParquetFile(self.path).metadata.num_rows

    def chunks(self, start: dict[str, Position], chunk_events: int) -> Iterator[Chunk]:
        """Chunks of at most `chunk_events` records after `start[self.shard]`."""
        pos = start.get(self.shard, Position())
        if self.fmt == "parquet":
            yield from self._parquet_chunks(pos, chunk_events)
        else:
            yield from self._text_chunks(pos, chunk_events)

    # ---- text formats ----------------------------------------------------------------------------
    def _text_chunks(self, pos: Position, chunk_events: int) -> Iterator[Chunk]:
        with self.path.open("rb") as fh:
            header = None
            if self.fmt == "csv":
                header = self._csv_header(fh.readline().decode("utf-8", errors="replace"))
            line_no, offset = pos.position, pos.byte_offset
            if line_no < 1 or offset <= 0:  # from the start (the header, if any, is line 1)
                fh.seek(0)
                line_no, offset = 0, 0
            else:
                fh.seek(offset)
            parse = self._parser(header)
            events: list[SourcedEvent] = []
            bad: list[BadRecord] = []
            chunk_start = offset
            for raw in fh:
                line_no += 1
                offset += len(raw)
                text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if line_no == 1 and header is not None and header.is_header:
                    continue
                if not text.strip():
                    continue  # blank lines are not records
                try:
                    event = parse(text)
                except BadLine as exc:
                    bad.append(BadRecord(f"{self.name}:{line_no}", exc.reason, str(exc), text[:MAX_RAW_CHARS]))
                except ValidationError as exc:
                    reason, detail = _reason_of(exc)
                    bad.append(BadRecord(f"{self.name}:{line_no}", reason, detail, text[:MAX_RAW_CHARS]))
                else:
                    events.append(SourcedEvent(event, self.shard, line_no))
                if len(events) + len(bad) >= chunk_events:
                    yield Chunk(events, bad, len(events) + len(bad), {self.shard: Position(line_no, offset)},
                                offset - chunk_start)
                    events, bad, chunk_start = [], [], offset
            if events or bad or line_no > pos.position:
                yield Chunk(events, bad, len(events) + len(bad), {self.shard: Position(line_no, offset)},
                            offset - chunk_start)

    @dataclass
    class _Header:
        columns: tuple[str, ...]
        is_header: bool

    def _csv_header(self, first: str) -> "FileSource._Header":
        cells = [c.strip().lower() for c in next(csv.reader([first.rstrip("\r\n")]), [])]
        if "user_id" in cells and "item_id" in cells:
            cols = tuple("action" if c == "rating" else c for c in cells)
            if "timestamp" not in cols:
                raise ValueError(f"{self.path}: CSV header {cells} has no timestamp column")
            return FileSource._Header(cols, True)
        return FileSource._Header(CSV_COLUMNS[: max(3, min(4, len(cells)))], False)

    def _parser(self, header: "FileSource._Header | None"):
        if self.fmt == "movielens":
            def parse(text: str) -> InteractionEvent:
                parts = text.split("\t")
                if len(parts) != 4:
                    raise BadLine("wrong_field_count", f"expected 4 tab-separated fields, got {len(parts)}")
                try:
                    action, ts = _int(parts[2], "rating"), _int(parts[3], "timestamp")
                except ValueError as exc:
                    raise BadLine("wrong_type", str(exc)) from None
                return InteractionEvent(user_id=parts[0], item_id=parts[1], action=action, timestamp=ts)
            return parse
        if self.fmt == "jsonl":
            def parse(text: str) -> InteractionEvent:
                try:
                    rec = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise BadLine("malformed_json", str(exc)) from None
                if isinstance(rec, dict) and "rating" in rec and "action" not in rec:
                    rec["action"] = rec.pop("rating")
                return InteractionEvent.model_validate(rec)
            return parse
        assert header is not None
        cols = header.columns

        def parse(text: str) -> InteractionEvent:
            cells = text.split(",") if '"' not in text else next(csv.reader([text]))
            if len(cells) != len(cols):
                raise BadLine("wrong_field_count", f"expected {len(cols)} comma-separated fields, got {len(cells)}")
            rec = dict(zip(cols, cells))
            try:
                ts = _int(rec["timestamp"], "timestamp")
                action = _int(rec["action"], "action") if rec.get("action", "") != "" else 0
            except ValueError as exc:
                raise BadLine("wrong_type", str(exc)) from None
            return InteractionEvent(user_id=rec["user_id"], item_id=rec["item_id"], action=action, timestamp=ts)
        return parse

    # ---- Parquet -----------------------------------------------------------------------------------
    def _parquet_chunks(self, pos: Position, chunk_events: int) -> Iterator[Chunk]:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(self.path)
        names = set(pf.schema_arrow.names)
        missing = {"user_id", "item_id", "timestamp"} - names
        if missing:
            raise ValueError(f"{self.path}: Parquet file lacks columns {sorted(missing)}")
        action_col = "action" if "action" in names else ("rating" if "rating" in names else None)
        cols = ["user_id", "item_id", "timestamp"] + ([action_col] if action_col else [])
        row = 0
        for batch in pf.iter_batches(batch_size=chunk_events, columns=cols):
            first = row + 1
            row += batch.num_rows
            if row <= pos.position:
                continue
            data = batch.to_pydict()
            events: list[SourcedEvent] = []
            bad: list[BadRecord] = []
            for i in range(max(0, pos.position - first + 1), batch.num_rows):
                number = first + i
                rec = {"user_id": data["user_id"][i], "item_id": data["item_id"][i],
                       "timestamp": data["timestamp"][i],
                       "action": data[action_col][i] if action_col and data[action_col][i] is not None else 0}
                try:
                    events.append(SourcedEvent(InteractionEvent.model_validate(rec), self.shard, number))
                except ValidationError as exc:
                    reason, detail = _reason_of(exc)
                    bad.append(BadRecord(f"{self.name}:{number}", reason, detail, str(rec)[:MAX_RAW_CHARS]))
            yield Chunk(events, bad, len(events) + len(bad), {self.shard: Position(row, 0)})


@dataclass
class KafkaSource:
    """A topic from the earliest retained offset (or a resume position) up to fixed end offsets.

    The end offsets are taken once, when a job starts, and stored with its progress: records produced
    later belong to the live worker.
    """

    settings: InfraSettings
    topic: str
    poll_timeout_ms: int = 1000
    max_idle_polls: int = 30
    kind: str = field(default="kafka", init=False)

    @property
    def description(self) -> str:
        return f"Kafka topic {self.topic}"

    def shard(self, partition: int) -> str:
        return f"{self.topic}:{partition}"

    def end_offsets(self) -> dict[str, int]:
        """Shard -> end offset (exclusive) of every partition, now."""
        return end_offsets(self.settings, self.topic)

    def chunks(self, start: dict[str, Position], end: dict[str, int], chunk_events: int) -> Iterator[Chunk]:
        """Records after `start` and before `end`, in chunks of at most `chunk_events` records."""
        from kafka import TopicPartition

        from infra.kafka import make_consumer

        todo = {s: e for s, e in end.items() if start.get(s, Position()).position + 1 < e}
        if not todo:
            return
        consumer = make_consumer(self.settings, group_id=None, enable_auto_commit=False,
                                 max_poll_records=min(chunk_events, 5000))
        try:
            tps = {s: TopicPartition(self.topic, int(s.rsplit(":", 1)[1])) for s in todo}
            consumer.assign(list(tps.values()))
            for s, tp in tps.items():
                done = start.get(s, Position()).position
                if done < 0:
                    consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, done + 1)
            last = {s: start.get(s, Position()).position for s in todo}
            events: list[SourcedEvent] = []
            bad: list[BadRecord] = []
            idle = 0
            while True:
                open_tps = [tps[s] for s in todo if consumer.position(tps[s]) < todo[s]]
                if not open_tps:
                    break
                room = chunk_events - len(events) - len(bad)
                batches = consumer.poll(timeout_ms=self.poll_timeout_ms, max_records=room)
                if not any(batches.values()):
                    idle += 1
                    if idle > self.max_idle_polls:
                        raise TimeoutError(f"Kafka topic {self.topic}: no records for {idle} polls before the end "
                                           f"offsets {todo} (positions {last})")
                    continue
                idle = 0
                for tp, records in batches.items():
                    s = self.shard(tp.partition)
                    for rec in records:
                        if rec.offset >= todo[s]:
                            continue  # produced after the job started: the live worker's
                        decoded = decode_kafka_record(self.topic, tp.partition, rec.offset, rec.key, rec.value)
                        if isinstance(decoded, BadRecord):
                            bad.append(decoded)
                        else:
                            events.append(decoded)
                        last[s] = rec.offset
                    if consumer.position(tp) >= todo[s]:
                        consumer.pause(tp)
                if len(events) + len(bad) >= chunk_events:
                    yield Chunk(events, bad, len(events) + len(bad), {s: Position(o) for s, o in last.items()})
                    events, bad = [], []
            for s in todo:  # the end may sit past trailing markers / deleted records
                last[s] = todo[s] - 1
            yield Chunk(events, bad, len(events) + len(bad), {s: Position(o) for s, o in last.items()})
        finally:
            consumer.close()


def end_offsets(settings: InfraSettings, topic: str) -> dict[str, int]:
    """'topic:partition' -> end offset (exclusive) of every partition of `topic`; raises if it does not exist."""
    from kafka import TopicPartition

    from infra.kafka import make_consumer

    consumer = make_consumer(settings, group_id=None, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ValueError(f"Kafka topic {topic!r} does not exist (or has no partitions)")
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in sorted(partitions)])
        return {f"{topic}:{tp.partition}": int(off) for tp, off in ends.items()}
    finally:
        consumer.close()


def decode_kafka_record(topic: str, partition: int, offset: int, key: bytes | None,
                        value: bytes | None) -> SourcedEvent | BadRecord:
    """JSON value -> event with source 'topic:partition', as the live worker decodes it."""
    where = f"{topic}:{partition}@{offset}"
    raw = (value or b"")[:MAX_RAW_CHARS].decode("utf-8", errors="replace")
    if not value:
        return BadRecord(where, "empty", "record has no value", raw)
    try:
        event = InteractionEvent.model_validate_json(value)
    except ValidationError as exc:
        reason, detail = _reason_of(exc)
        return BadRecord(where, reason, detail, raw)
    if key is not None and key != event.user_id.encode():
        return BadRecord(where, "key_mismatch", f"record key {key[:64]!r} != user_id {event.user_id[:64]!r}", raw)
    return SourcedEvent(event, f"{topic}:{partition}", offset)
