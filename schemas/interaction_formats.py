"""Interaction file formats: which one a file is, and the one function per format that turns a record into an event.

    movielens  u.data: user item rating timestamp, tab-separated, no header
    csv        user_id,item_id,timestamp[,action|rating], with or without that header
    jsonl      one JSON object a line with those keys ("rating" is read as "action")
    parquet    columns user_id, item_id, timestamp[, action|rating]
Training, the backfill and the producer all parse through these functions, so a record is the same event, or
the same bad record, whoever reads it. Integers are strict: "881250949.0" is 881250949, "1.5" is bad (never 1).

A text line that is plainly valid (ids without surrounding whitespace, within the length limit; integers of
ASCII digits, within range) becomes an `Interaction` without pydantic; any other line goes through the strict
validation (`validate_event`), which decides it and names the reason. The plain check accepts only lines the
strict one accepts with the same values (tests/schemas/test_fast_parse.py), so the result is the same either
way, at ~1 µs instead of ~6 per line.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from schemas.bad_records import InvalidRecord, validate_event
from schemas.events import MAX_ACTION, MAX_ID_LENGTH, MAX_TIMESTAMP, Interaction

FileFormat = Literal["movielens", "csv", "jsonl", "parquet"]
FORMATS: tuple[str, ...] = ("movielens", "csv", "jsonl", "parquet")
CSV_COLUMNS = ("user_id", "item_id", "timestamp", "action")
LineParser = Callable[[str], Interaction]


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


@dataclass(frozen=True)
class CsvHeader:
    """The columns of a CSV file, and whether its first line names them (then it is not a record)."""

    columns: tuple[str, ...]
    is_header: bool


def csv_header(first_line: str, path: Path) -> CsvHeader:
    """A header names user_id and item_id ("rating" is read as "action"); else the columns are positional."""
    cells = [c.strip().lower() for c in next(csv.reader([first_line.rstrip("\r\n")]), [])]
    if "user_id" in cells and "item_id" in cells:
        cols = tuple("action" if c == "rating" else c for c in cells)
        if "timestamp" not in cols:
            raise ValueError(f"{path}: CSV header {cells} has no timestamp column")
        return CsvHeader(cols, True)
    return CsvHeader(CSV_COLUMNS[: max(3, min(4, len(cells)))], False)


def _int(text: str, name: str) -> int:
    """An integer field; '881250949.0' is accepted, '1.5' is not (it would silently round)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError as exc:
        raise InvalidRecord("wrong_type", str(exc)) from None
    if not value.is_integer():
        raise InvalidRecord("wrong_type", f"{name} {text!r} is not an integer")
    return int(value)


def _plain(user: str, item: str, action: str, timestamp: str) -> Interaction | None:
    """The event of plainly valid fields, else None (then the strict validation decides)."""
    if (0 < len(user) <= MAX_ID_LENGTH and 0 < len(item) <= MAX_ID_LENGTH
            and not (user[0].isspace() or user[-1].isspace() or item[0].isspace() or item[-1].isspace())
            and action.isascii() and action.isdigit() and timestamp.isascii() and timestamp.isdigit()):
        a, t = int(action), int(timestamp)
        if a <= MAX_ACTION and t <= MAX_TIMESTAMP:
            return Interaction(user, item, a, t)
    return None


def _strict(fields: dict) -> Interaction:
    return Interaction.of(validate_event(fields))


def parse_movielens(text: str) -> Interaction:
    parts = text.split("\t")
    if len(parts) != 4:
        raise InvalidRecord("wrong_field_count", f"expected 4 tab-separated fields, got {len(parts)}")
    plain = _plain(*parts)
    if plain is not None:
        return plain
    action, ts = _int(parts[2], "rating"), _int(parts[3], "timestamp")
    return _strict({"user_id": parts[0], "item_id": parts[1], "action": action, "timestamp": ts})


def parse_jsonl(text: str) -> Interaction:
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRecord("malformed_json", str(exc)) from None
    if isinstance(rec, dict) and "rating" in rec and "action" not in rec:
        rec["action"] = rec.pop("rating")
    return _strict(rec)


def csv_parser(header: CsvHeader) -> LineParser:
    """The parser of one CSV file's lines (its columns come from its header, or their count)."""
    cols = header.columns
    at = {c: i for i, c in enumerate(cols)}
    u, i, t, a = at["user_id"], at["item_id"], at["timestamp"], at.get("action")

    def parse_csv(text: str) -> Interaction:
        cells = text.split(",") if '"' not in text else next(csv.reader([text]))
        if len(cells) != len(cols):
            raise InvalidRecord("wrong_field_count", f"expected {len(cols)} comma-separated fields, got {len(cells)}")
        action_text = cells[a] if a is not None and cells[a] != "" else "0"
        plain = _plain(cells[u], cells[i], action_text, cells[t])
        if plain is not None:
            return plain
        ts = _int(cells[t], "timestamp")
        action = _int(action_text, "action")
        return _strict({"user_id": cells[u], "item_id": cells[i], "action": action, "timestamp": ts})

    return parse_csv


def line_parser(fmt: FileFormat, header: CsvHeader | None = None) -> LineParser:
    """The parser of one line of a text format (CSV needs the file's header)."""
    if fmt == "movielens":
        return parse_movielens
    if fmt == "jsonl":
        return parse_jsonl
    if fmt == "csv" and header is not None:
        return csv_parser(header)
    raise ValueError(f"no line parser for format {fmt!r}")


def parse_parquet_row(row: dict[str, Any]) -> Interaction:
    """A Parquet row (typed values; a missing or null action is 0)."""
    return _strict({**row, "action": 0 if row.get("action") is None else row["action"]})
