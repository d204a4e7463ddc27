"""Backfill sources: historical logs read in bounded-memory chunks of validated, offset-carrying events.

Every event gets a source and an offset for `stream.apply` (invariant 4):
    file   source "file:<file name>", offset = the 1-based line number (Parquet: row number; a CSV
           header is line 1), so a row records the last line of the file it includes;
    Kafka  source "<topic>:<partition>", offset = the Kafka offset — exactly what the live worker uses,
           so the worker skips every event a backfilled row already holds.
A source resumes from a `Position` (the last record already included), reads each record once, and
never holds more than one chunk of events. Records are parsed by the readers every other path uses
(files: schemas.interactions, as training does; Kafka: stream.decode, as the worker does). Bad
records are returned with their location and reason, never raised: the caller counts them and decides
when there are too many.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.bad_records import BadRecord
from schemas.interaction_formats import FORMATS, FileFormat, detect_format
from schemas.interactions import Parsed, TextLines, parquet_batches, parquet_rows
from schemas.source_keys import file_key, parse_partition_key, partition_key
from stream.apply import EventColumns, SourcedEvent
from stream.decode import DEFAULT_MAX_EVENT_BYTES, DeadLetter, decode_record

if TYPE_CHECKING:
    from infra.settings import InfraSettings


@dataclass
class Position:
    """Last record already included in one shard (-1: none). `byte_offset` lets a file resume by seeking."""

    position: int = -1
    byte_offset: int = 0


@dataclass
class Chunk:
    """Events in source order, the bad records among them, and each shard's position after the chunk."""

    events: EventColumns
    bad: list[BadRecord]
    records: int
    positions: dict[str, Position]
    bytes_read: int = 0


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
        self.shard = file_key(self.name)

    @property
    def description(self) -> str:
        return f"{self.fmt} file {self.path}"

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def total_records(self) -> int | None:
        """Known without reading the file only for Parquet."""
        return parquet_rows(self.path) if self.fmt == "parquet" else None

    def chunks(self, start: dict[str, Position], chunk_events: int) -> Iterator[Chunk]:
        """Chunks of at most `chunk_events` records after `start[self.shard]`."""
        pos = start.get(self.shard, Position())
        if self.fmt == "parquet":
            yield from self._parquet_chunks(pos, chunk_events)
        else:
            yield from self._text_chunks(pos, chunk_events)

    def _text_chunks(self, pos: Position, chunk_events: int) -> Iterator[Chunk]:
        lines = TextLines(self.path, self.fmt, self.name, pos.position, pos.byte_offset)
        events = EventColumns()
        bad: list[BadRecord] = []
        chunk_start = lines.offset
        for number, parsed in lines:
            self._sort(number, parsed, events, bad)
            if len(events) + len(bad) >= chunk_events:
                yield Chunk(events, bad, len(events) + len(bad), {self.shard: Position(lines.line, lines.offset)},
                            lines.offset - chunk_start)
                events, bad, chunk_start = EventColumns(), [], lines.offset
        if events or bad or lines.line > pos.position:
            yield Chunk(events, bad, len(events) + len(bad), {self.shard: Position(lines.line, lines.offset)},
                        lines.offset - chunk_start)

    def _parquet_chunks(self, pos: Position, chunk_events: int) -> Iterator[Chunk]:
        for row, records in parquet_batches(self.path, self.name, pos.position, chunk_events):
            events = EventColumns()
            bad: list[BadRecord] = []
            for number, parsed in records:
                self._sort(number, parsed, events, bad)
            yield Chunk(events, bad, len(events) + len(bad), {self.shard: Position(row, 0)})

    def _sort(self, number: int, parsed: Parsed, events: EventColumns, bad: list[BadRecord]) -> None:
        if isinstance(parsed, BadRecord):
            bad.append(parsed)
        else:
            events.append(*parsed, self.shard, number)


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
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES  # as the worker's default: larger records are bad here too
    kind: str = field(default="kafka", init=False)

    @property
    def description(self) -> str:
        return f"Kafka topic {self.topic}"

    def shard(self, partition: int) -> str:
        return partition_key(self.topic, partition)

    def decode(self, partition: int, offset: int, key: bytes | None, value: bytes | None) -> SourcedEvent | BadRecord:
        """One record through the worker's decoder; a dead letter becomes a bad record of the report."""
        decoded = decode_record(self.topic, partition, offset, key, value, self.max_event_bytes)
        return decoded.as_bad_record() if isinstance(decoded, DeadLetter) else decoded

    def end_offsets(self) -> dict[str, int]:
        """Shard -> end offset (exclusive) of every partition, now."""
        return end_offsets(self.settings, self.topic)

    def beginning_offsets(self) -> dict[str, int]:
        """Shard -> earliest offset the topic still holds (retention may have deleted the ones before)."""
        from kafka import TopicPartition

        from infra.kafka import make_consumer

        consumer = make_consumer(self.settings, group_id=None, enable_auto_commit=False)
        try:
            parts = [TopicPartition(self.topic, p) for p in sorted(consumer.partitions_for_topic(self.topic) or ())]
            return {self.shard(tp.partition): int(o) for tp, o in consumer.beginning_offsets(parts).items()}
        finally:
            consumer.close()

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
            tps = {s: TopicPartition(self.topic, parse_partition_key(s)[1]) for s in todo}
            consumer.assign(list(tps.values()))
            for s, tp in tps.items():
                done = start.get(s, Position()).position
                if done < 0:
                    consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, done + 1)
            last = {s: start.get(s, Position()).position for s in todo}
            events = EventColumns()
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
                        decoded = self.decode(tp.partition, rec.offset, rec.key, rec.value)
                        if isinstance(decoded, BadRecord):
                            bad.append(decoded)
                        else:
                            events.add(decoded)
                        last[s] = rec.offset
                    if consumer.position(tp) >= todo[s]:
                        consumer.pause(tp)
                if len(events) + len(bad) >= chunk_events:
                    yield Chunk(events, bad, len(events) + len(bad), {s: Position(o) for s, o in last.items()})
                    events, bad = EventColumns(), []
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
        return {partition_key(topic, tp.partition): int(off) for tp, off in ends.items()}
    finally:
        consumer.close()
