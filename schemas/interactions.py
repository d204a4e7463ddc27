"""The one reader of interaction files: records in file order, each an event or a located bad record.

Training and evaluation (`read_interactions`, via models/training/data.py), the producer and the backfill
(stream/sources.py FileSource, which resumes from a line and byte offset and reads in chunks) all read through
here, so offline metrics and served rows come from exactly the same events. Text formats are read line by line
(a record's offset is its line number, which the backfill checkpoints); Parquet by row batches.
Bad records are returned with their location ("u.data:17") and reason, never dropped silently or repaired.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

from schemas.bad_records import MAX_RAW_CHARS, BadRecord, InvalidRecord
from schemas.events import Interaction
from schemas.interaction_formats import FileFormat, csv_header, detect_format, line_parser, parse_parquet_row

log = logging.getLogger(__name__)

Parsed = Interaction | BadRecord
PARQUET_BATCH_ROWS = 65_536


class TextLines:
    """The records of a text log after a resume point (line number and the byte offset of the next line).

    `line` and `offset` say how far it has read: after a record, that record's line and the end of it;
    once exhausted, the end of the file (blank lines and the CSV header are read but are not records).
    """

    def __init__(self, path: Path, fmt: FileFormat, name: str, line: int = 0, offset: int = 0):
        self.path, self.fmt, self.name = path, fmt, name
        self.line, self.offset = (line, offset) if line >= 1 and offset > 0 else (0, 0)

    def __iter__(self) -> Iterator[tuple[int, Parsed]]:
        with self.path.open("rb") as fh:
            header = csv_header(fh.readline().decode("utf-8", errors="replace"), self.path) \
                if self.fmt == "csv" else None
            parse = line_parser(self.fmt, header)
            skip_header = header is not None and header.is_header
            fh.seek(self.offset)
            for raw in fh:
                self.line += 1
                self.offset += len(raw)
                if self.line == 1 and skip_header:
                    continue
                try:
                    text = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as exc:
                    yield self.line, self._bad(InvalidRecord("bad_encoding", str(exc)),
                                               raw.decode("utf-8", errors="replace"))
                    continue
                if not text.strip():
                    continue  # blank lines are not records
                try:
                    yield self.line, parse(text)
                except InvalidRecord as exc:
                    yield self.line, self._bad(exc, text)

    def _bad(self, exc: InvalidRecord, text: str) -> BadRecord:
        return BadRecord(f"{self.name}:{self.line}", exc.reason, exc.detail, text.rstrip("\r\n")[:MAX_RAW_CHARS])


def parquet_rows(path: Path) -> int:
    """Row count from the footer (no data read)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def parquet_batches(path: Path, name: str, after: int = 0,
                    batch_rows: int = PARQUET_BATCH_ROWS) -> Iterator[tuple[int, list[tuple[int, Parsed]]]]:
    """(number of the batch's last row, its records after row `after`) for every batch not wholly read.

    Rows are numbered from 1; a resumed read skips whole batches without parsing them.
    """
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    names = set(pf.schema_arrow.names)
    missing = {"user_id", "item_id", "timestamp"} - names
    if missing:
        raise ValueError(f"{path}: Parquet file lacks columns {sorted(missing)}")
    action_col = "action" if "action" in names else ("rating" if "rating" in names else None)
    cols = ["user_id", "item_id", "timestamp"] + ([action_col] if action_col else [])
    row = 0
    for batch in pf.iter_batches(batch_size=batch_rows, columns=cols):
        first = row + 1
        row += batch.num_rows
        if row <= after:
            continue
        data = batch.to_pydict()
        records: list[tuple[int, Parsed]] = []
        for i in range(max(0, after - first + 1), batch.num_rows):
            rec = {"user_id": data["user_id"][i], "item_id": data["item_id"][i], "timestamp": data["timestamp"][i],
                   "action": data[action_col][i] if action_col else None}
            try:
                records.append((first + i, parse_parquet_row(rec)))
            except InvalidRecord as exc:
                records.append((first + i, BadRecord(f"{name}:{first + i}", exc.reason, exc.detail,
                                                     str(rec)[:MAX_RAW_CHARS])))
        yield row, records


def iter_records(path: Path, fmt: FileFormat, name: str) -> Iterator[tuple[int, Parsed]]:
    """Every record of a file from its start: (line or row number, event or bad record)."""
    if fmt == "parquet":
        for _, records in parquet_batches(path, name):
            yield from records
    else:
        yield from TextLines(path, fmt, name)


@dataclass
class InteractionLog(Sequence[Interaction]):
    """A whole file: its valid events in file order (indexable like a list) and the bad records left out."""

    path: Path
    rows: list[Interaction] = field(default_factory=list)
    bad: list[BadRecord] = field(default_factory=list)

    @overload
    def __getitem__(self, i: int) -> Interaction: ...

    @overload
    def __getitem__(self, i: slice) -> list[Interaction]: ...

    def __getitem__(self, i: int | slice) -> Interaction | list[Interaction]:
        return self.rows[i]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Interaction]:
        return iter(self.rows)

    @property
    def records(self) -> int:
        return len(self.rows) + len(self.bad)

    def bad_summary(self) -> str:
        """"3 of 1000 records of u.data are bad and were left out (by reason: {...}; first: u.data:4 ...)"."""
        reasons = dict(Counter(b.reason for b in self.bad))
        first = "; ".join(f"{b.location} {b.reason} ({b.detail})" for b in self.bad[:3])
        return (f"{len(self.bad)} of {self.records} records of {self.path.name} are bad and were left out "
                f"(by reason: {reasons}; first: {first})")


def read_interactions(path: str | Path, fmt: FileFormat | None = None) -> InteractionLog:
    """A whole interaction file (format detected unless given); bad records are kept aside and logged."""
    src = Path(path)
    if not src.is_file():
        raise FileNotFoundError(f"dataset not found: {src}")
    out = InteractionLog(src)
    for _, parsed in iter_records(src, fmt or detect_format(src), src.name):
        if isinstance(parsed, BadRecord):
            out.bad.append(parsed)
        else:
            out.rows.append(parsed)
    if out.bad:
        log.warning(out.bad_summary())
    return out
