"""Cassandra access: `user_summaries` (concurrent prepared reads and writes of SummaryRow) and `backfill_progress`.

SummaryStore is used by the stream worker, the backfill and the scorer; ProgressStore by the backfill (its
checkpoints). I/O errors are errors: a failed read never turns into "no row" (that would silently restart a
user's history), and `write` returns only after every row is acknowledged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from schemas.rows import EVENTS_PER_GENERATION, SummaryRow

if TYPE_CHECKING:
    from cassandra.cluster import Session

COLUMNS = ("user_id", "model_version", "state", "n", "last_ts", "recent_items", "recent_h", "seeds",
           "applied_offsets", "events_seen", "last_event_ts", "updated_at")
SUMMARY_COLUMNS = tuple(c for c in COLUMNS if c != "state")


class StoreError(RuntimeError):
    """A read or write of summary rows failed (Cassandra unreachable, timeout, ...)."""


class SummaryStore:
    """Prepared statements for one session and keyspace (prepared once per instance)."""

    def __init__(self, session: Session, keyspace: str | None = None, *, concurrency: int = 64):
        ks = keyspace or session.keyspace
        if not ks:
            raise ValueError("SummaryStore needs a keyspace (session keyspace or keyspace=...)")
        self.session = session
        self.concurrency = concurrency
        cols = ", ".join(COLUMNS)
        self._select = session.prepare(
            f"SELECT {cols}, WRITETIME(events_seen) AS written FROM {ks}.user_summaries "
            "WHERE user_id = ? AND model_version = ?")
        # the scorer never needs the L×H×d×d state blob (the largest column): skip it on its reads
        self._select_summary = session.prepare(
            f"SELECT {', '.join(SUMMARY_COLUMNS)}, WRITETIME(events_seen) AS written FROM {ks}.user_summaries "
            "WHERE user_id = ? AND model_version = ?")
        # fenced: the write timestamp grows with the row's state (SummaryRow.write_timestamp), so a late write
        # of an older state (a worker that stalled past a rebalance) loses to the newer row
        self._insert = session.prepare(
            f"INSERT INTO {ks}.user_summaries ({cols}) VALUES ({', '.join('?' * len(COLUMNS))}) USING TIMESTAMP ?")

    def read(self, user_ids: Iterable[str], model_version: str, *, with_state: bool = True
             ) -> dict[str, SummaryRow | None]:
        """Rows of these users under `model_version` (None where the user has no row), in input order.

        with_state=False skips the state blob (scoring reads): those rows have `state == b""` and cannot
        be continued (decoding their state raises BlobError).
        """
        from cassandra.concurrent import execute_concurrent_with_args

        users = list(dict.fromkeys(user_ids))
        if not users:
            return {}
        statement, columns = (self._select, COLUMNS) if with_state else (self._select_summary, SUMMARY_COLUMNS)
        results = execute_concurrent_with_args(self.session, statement, [(u, model_version) for u in users],
                                               concurrency=self.concurrency, raise_on_first_error=False)
        out: dict[str, SummaryRow | None] = {}
        for user, (ok, result) in zip(users, results):
            if not ok:
                raise StoreError(f"reading the summary of user {user!r} failed: {result}") from (
                    result if isinstance(result, BaseException) else None)
            found = result.one()
            if found is None:
                out[user] = None
                continue
            values = {c: _value(c, getattr(found, c)) for c in columns}
            out[user] = SummaryRow(**{"state": b"", **values}, generation=_generation(found.written, values))
        return out

    def write(self, rows: list[SummaryRow]) -> None:
        """Write every row; returns once all are acknowledged, raises StoreError if any failed."""
        from cassandra.concurrent import execute_concurrent_with_args

        if not rows:
            return
        from cassandra.query import UNSET_VALUE

        # a model without the target readout stores no seeds: the cell is left unset (no tombstone)
        params = [tuple(UNSET_VALUE if c == "seeds" and r.seeds is None else getattr(r, c) for c in COLUMNS)
                  + (r.write_timestamp,) for r in rows]
        results = execute_concurrent_with_args(self.session, self._insert, params, concurrency=self.concurrency,
                                               raise_on_first_error=False)
        failed = [(r.user_id, res) for r, (ok, res) in zip(rows, results) if not ok]
        if failed:
            user, err = failed[0]
            raise StoreError(f"{len(failed)} of {len(rows)} summary writes failed (first: user {user!r}: {err})")


def _generation(written: int | None, values: dict) -> int:
    """The generation of a stored row from its write timestamp. A fenced write's low 32 bits are its
    events_seen; a row written with a wall-clock timestamp (before fencing) has other low bits, and its
    continuation moves to the next generation so that it still outranks it."""
    written = written or 0
    generation, low = divmod(written, EVENTS_PER_GENERATION)
    return generation + 1 if low > (values.get("events_seen") or 0) else generation


def _value(column: str, value: object) -> object:
    """Driver values -> SummaryRow fields (NULL maps and blobs become their empty forms)."""
    if column == "applied_offsets":
        return dict(value or {})
    if column in ("state", "recent_items", "recent_h", "seeds") and value is not None:
        return bytes(value)
    return value


@dataclass
class ShardProgress:
    """One row of backfill_progress."""

    shard: str
    position: int = -1
    byte_offset: int = 0
    end_position: int | None = None
    handover: dict[str, int] = field(default_factory=dict)
    events: int = 0
    applied: int = 0
    skipped: int = 0
    bad_lines: int = 0
    users: int = 0
    status: str = "running"
    model_version: str = ""
    source: str = ""


REBUILD_MARK = "#rebuild-"
"""In the job id of a rebuild of single users (stream/backfill.py)."""


class ProgressStore:
    """backfill_progress rows of one keyspace (infra/cql/020 and 030); prepared once per instance."""

    COLUMNS = ("job_id", "shard", "model_version", "source", "position", "byte_offset", "end_position", "handover",
               "events", "applied", "skipped", "bad_lines", "users", "status", "updated_at")

    def __init__(self, session: Session, keyspace: str | None = None):
        ks = keyspace or session.keyspace
        if not ks:
            raise ValueError("ProgressStore needs a keyspace")
        self.session = session
        cols = ", ".join(self.COLUMNS)
        self._select = session.prepare(f"SELECT {cols} FROM {ks}.backfill_progress WHERE job_id = ?")
        self._insert = session.prepare(
            f"INSERT INTO {ks}.backfill_progress ({cols}) VALUES ({', '.join('?' * len(self.COLUMNS))})")
        self._all = f"SELECT job_id, model_version, status FROM {ks}.backfill_progress"

    def job_states(self, model_version: str) -> dict[str, list[str]]:
        """Each backfill job of `model_version` with its shards' states (running, done); rebuilds of single
        users are left out (the table holds one row per job and shard: a small full scan)."""
        states: dict[str, list[str]] = {}
        for r in self.session.execute(self._all):
            if r.model_version == model_version and REBUILD_MARK not in r.job_id:
                states.setdefault(r.job_id, []).append(r.status or "running")
        return states

    def finished_jobs(self, model_version: str) -> list[str]:
        """Backfill jobs of `model_version` whose every shard is done; a job split with `--shards N` counts
        once all N of its jobs are. A rebuild of single users is no backfill of the version and never counts."""
        done = {job for job, states in self.job_states(model_version).items() if all(x == "done" for x in states)}
        finished = []
        for job in sorted(done):
            base, _, shard = job.partition("#shard")
            if not shard:
                finished.append(job)
                continue
            count = shard.partition("of")[2]
            if count.isdigit() and all(f"{base}#shard{i}of{count}" in done for i in range(int(count))):
                finished.append(job)
        return finished

    def read(self, job_id: str) -> dict[str, ShardProgress]:
        out = {}
        for r in self.session.execute(self._select, (job_id,)):
            out[r.shard] = ShardProgress(
                shard=r.shard, position=r.position if r.position is not None else -1, byte_offset=r.byte_offset or 0,
                end_position=r.end_position, handover=dict(r.handover or {}), events=r.events or 0,
                applied=r.applied or 0, skipped=r.skipped or 0, bad_lines=r.bad_lines or 0, users=r.users or 0,
                status=r.status or "running", model_version=r.model_version or "", source=r.source or "")
        return out

    def write(self, job_id: str, shards: list[ShardProgress]) -> None:
        """All shards of one checkpoint in one single-partition batch (atomic: job_id is the partition key)."""
        from cassandra.query import BatchStatement, BatchType

        now = datetime.now(timezone.utc)
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        for p in shards:
            batch.add(self._insert, (job_id, p.shard, p.model_version, p.source, p.position, p.byte_offset,
                                     p.end_position, p.handover, p.events, p.applied, p.skipped, p.bad_lines,
                                     p.users, p.status, now))
        self.session.execute(batch)
