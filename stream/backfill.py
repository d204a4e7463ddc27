"""Backfill: replay a historical log into stored summaries, resumable, handing over exactly to the live worker.

    chunk of events (stream.sources) -> rows of their users (LRU cache, else Cassandra)
      -> stream.apply.apply_events (the one update path: model.update over all users of the chunk at once)
      -> rows written concurrently (SummaryStore, in a writer thread overlapping the next chunk's compute)
      -> progress checkpoint (backfill_progress) once the chunk's rows are acknowledged

Resume and idempotency. The checkpoint of a shard is the last record whose effect is durable. A killed job
restarts after it; records between the checkpoint and the kill may already be in rows, and apply_events
skips them by offset (each row holds, per source, the last offset it includes). Rerunning a finished job
reads nothing new (a file that has grown since is continued from where it stopped), and even a job
restarted from scratch changes no row, since every event is at or below the stored offsets.

Handover to the live worker.
  Kafka source: rows carry the Kafka offsets ("topic:partition" -> offset) of the events they include,
  exactly as the worker writes them, so the worker skips those events and applies the rest.
  File source: events carry "file:<name>" and line numbers, which the worker never sees. The rule is a
  cut of the live topic: when a job starts, it records the live topic's end offsets (or takes them from
  `handover=`), and stamps every row it writes with them ("topic:partition" -> end - 1). The file must
  hold exactly the events produced before that cut (export the log, then note the topic's end offsets,
  or start the backfill, before producing more; or give the cut that was noted when the export was cut).
  The worker then skips, for every backfilled user, everything up to the cut and applies everything
  after it. The cut is stored with the job, so a resumed job stamps the same one.
Either way the worker of a model_version starts once its backfill is done (the scorer switches then);
while a backfill runs, it is the only writer of its model_version.

Order: a user's events are applied in source order (file order; Kafka order per partition), as the live
worker applies them. A file whose lines are not time-ordered is replayed as written (sort it first, e.g.
`sort -t$'\\t' -k4,4n u.data`, if time order is wanted); events older than the user's previous one are
counted as `out_of_order` in the report (their time gap is 0).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from schemas.rows import SummaryRow
from stream.apply import ApplyResult, SourcedEvent, apply_events, group_by_user
from stream.progress import Progress
from stream.row_cache import RowCache
from stream.sources import BadRecord, FileSource, KafkaSource, Position

if TYPE_CHECKING:
    from cassandra.cluster import Session

    from models.vista import VistaModel
    from models.vocab import ItemVocab

MAX_BAD_EXAMPLES = 20
MIN_RECORDS_FOR_BAD_ABORT = 1000


class BackfillError(RuntimeError):
    """The backfill stopped (too many bad records, a failed write); progress up to the last checkpoint is kept."""


class BackfillSettings(BaseModel):
    """Tuning of one backfill run (the CLI flags map 1:1 onto these)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chunk_events: int = Field(65_536, ge=1, description="records per chunk: bounds memory; rows written once per chunk")
    batch_cells: int = Field(16_384, ge=1, description="padded user x event cells per model.update call")
    min_fill: float = Field(0.75, gt=0, le=1, description="least real/padded share of an update call's cells")
    batch_users: int = Field(1024, ge=1, description="users per apply call: bounds the summarize intermediates")
    cache_users: int = Field(4096, ge=0, description="rows kept between chunks (LRU; ~31 KB each at the default size)")
    max_bad_fraction: float = Field(0.01, ge=0, le=1, description="abort when bad records exceed this share")
    seeds_dtype: Literal["float16", "int8q"] = Field("float16", description="storage type of the seeds blob")
    progress_bar: bool = Field(True, description="progress on stderr: a bar on a terminal, a line every 10 s otherwise")


class RowStore(Protocol):
    """What the backfill needs of a row store (stream.store.SummaryStore)."""

    def read(self, user_ids: list[str], model_version: str) -> dict[str, SummaryRow | None]: ...

    def write(self, rows: list[SummaryRow]) -> None: ...


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


class MemoryProgress:
    """Progress kept in a dict (benchmarks of the summarization alone; no resume across processes)."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, ShardProgress]] = {}

    def read(self, job_id: str) -> dict[str, ShardProgress]:
        return {k: ShardProgress(**vars(v)) for k, v in self.jobs.get(job_id, {}).items()}

    def write(self, job_id: str, shards: list[ShardProgress]) -> None:
        self.jobs.setdefault(job_id, {}).update({p.shard: ShardProgress(**vars(p)) for p in shards})


class MemoryStore:
    """Rows kept in a dict: the summarization alone, without Cassandra (benchmarks)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], SummaryRow] = {}

    def read(self, user_ids: list[str], model_version: str) -> dict[str, SummaryRow | None]:
        return {u: self.rows.get((u, model_version)) for u in user_ids}

    def write(self, rows: list[SummaryRow]) -> None:
        for r in rows:
            self.rows[(r.user_id, r.model_version)] = r


@dataclass
class BackfillReport:
    """The final summary (also printed by `vista backfill` as JSON)."""

    job_id: str
    model_version: str
    source: str
    status: str = "running"
    resumed: bool = False
    records: int = 0
    events: int = 0
    applied: int = 0
    skipped: int = 0
    oov: int = 0
    out_of_order: int = 0
    users: int = 0
    rows_written: int = 0
    chunks: int = 0
    bad: int = 0
    bad_by_reason: dict[str, int] = field(default_factory=dict)
    bad_examples: list[dict[str, str]] = field(default_factory=list)
    handover: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    events_per_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(vars(self))


def default_job_id(model_version: str, source: FileSource | KafkaSource) -> str:
    """Stable across reruns, so rerunning the same command resumes (or finds the job done)."""
    name = source.shard if isinstance(source, FileSource) else f"kafka:{source.topic}"
    return f"{model_version}/{name}"


def run_backfill(
    model: VistaModel,
    vocab: ItemVocab,
    model_version: str,
    source: FileSource | KafkaSource,
    store: RowStore,
    progress: ProgressStore | MemoryProgress,
    *,
    job_id: str | None = None,
    settings: BackfillSettings | None = None,
    handover: dict[str, int] | None = None,
    bad_records_path: str | Path | None = None,
    max_chunks: int | None = None,
    max_seconds: float | None = None,
) -> BackfillReport:
    """Run (or resume, or find done) one backfill job; returns its report.

    handover: file sources only: the live topic's cut ("topic:partition" -> end offset, exclusive), stamped
    into every row; ignored when the job already stored one. `max_chunks` / `max_seconds` stop early after a
    checkpoint (status "stopped"; the next run resumes there): dry runs, maintenance windows, benchmarks.
    """
    cfg = settings or BackfillSettings()
    job = job_id or default_job_id(model_version, source)
    report = BackfillReport(job_id=job, model_version=model_version, source=source.description)
    started = time.perf_counter()
    saved = progress.read(job)
    for p in saved.values():
        if p.model_version and p.model_version != model_version:
            raise BackfillError(f"job {job!r} was started with model_version {p.model_version}, not {model_version}")
    report.resumed = bool(saved)

    # -- shards, their start positions, the job's fixed end / cut (stored at the first run)
    if isinstance(source, KafkaSource):
        if saved:
            end = {s: p.end_position for s, p in saved.items() if p.end_position is not None}
        else:
            end = source.end_offsets()
        shards = {s: saved.get(s) or ShardProgress(s, end_position=e) for s, e in end.items()}
        cut: dict[str, int] = {}
        total = sum(max(0, e - (shards[s].position + 1)) for s, e in end.items())
    else:
        prior = saved.get(source.shard)
        shards = {source.shard: prior or ShardProgress(source.shard)}
        cut = dict(prior.handover) if prior else {k: v - 1 for k, v in (handover or {}).items() if v > 0}
        shards[source.shard].handover = cut
        total = source.total_records()
    for p in shards.values():
        p.model_version, p.source = model_version, source.description
        p.status = "running"
    report.handover = dict(cut)
    start = {s: Position(p.position, p.byte_offset) for s, p in shards.items()}
    # the job (with its end offsets / cut) exists before the first row is written
    progress.write(job, list(shards.values()))

    if isinstance(source, KafkaSource):
        chunks = source.chunks(start, {s: p.end_position for s, p in shards.items() if p.end_position is not None},
                               cfg.chunk_events)
    else:
        chunks = source.chunks(start, cfg.chunk_events)

    cache = RowCache(cfg.cache_users)
    users_seen: set[str] = set()
    bad_reasons: Counter[str] = Counter()
    timings: Counter[str] = Counter()
    bad_file = open(bad_records_path, "a") if bad_records_path else None  # noqa: SIM115 - closed below
    bar = _progress_bar(cfg, source, total, start)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backfill-writer")
    pending: Future | None = None
    stopped_early = False
    try:
        for chunk in chunks:
            t0 = time.perf_counter()
            _count_bad(chunk.bad, report, bad_reasons, bad_file)
            report.records += chunk.records
            report.events += len(chunk.events)
            if report.records >= MIN_RECORDS_FOR_BAD_ABORT and report.bad > cfg.max_bad_fraction * report.records:
                raise BackfillError(_too_many_bad(report, cfg, bad_reasons))

            rows = _rows_for(chunk.events, cache, store, model_version)
            t1 = time.perf_counter()
            report.out_of_order += _out_of_order(chunk.events, rows)
            result = _apply_bucketed(model, vocab, model_version, rows, chunk.events, cfg)
            t2 = time.perf_counter()
            if cut:
                for row in result.rows:
                    for s, off in cut.items():
                        row.applied_offsets[s] = max(row.applied_offsets.get(s, -1), off)
            cache.put(result.rows)
            report.applied += result.applied
            report.skipped += result.skipped
            report.oov += result.oov
            report.rows_written += len(result.rows)
            users_seen.update(r.user_id for r in result.rows)
            report.users = len(users_seen)
            report.chunks += 1
            for k, v in result.timings.items():
                timings[k] += v
            timings["read_rows"] += t1 - t0
            timings["apply"] += t2 - t1

            for s, pos in chunk.positions.items():
                p = shards[s]
                p.position, p.byte_offset = pos.position, pos.byte_offset
            for p in shards.values():
                p.events, p.applied, p.skipped = report.events, report.applied, report.skipped
                p.bad_lines, p.users = report.bad, report.users
            checkpoint = [ShardProgress(**vars(p)) for p in shards.values()]
            t3 = time.perf_counter()
            if pending is not None:
                pending.result()  # the previous chunk's rows and checkpoint are durable
            timings["wait_writes"] += time.perf_counter() - t3
            pending = pool.submit(_write_and_checkpoint, store, progress, job, result.rows, checkpoint)
            if bar is not None:
                elapsed = time.perf_counter() - started
                bar.update(chunk.bytes_read if total is None else chunk.records, events=report.events,
                           users=report.users, bad=report.bad, ev_s=f"{report.events / max(elapsed, 1e-9):,.0f}")
            if (max_chunks is not None and report.chunks >= max_chunks) or (
                    max_seconds is not None and time.perf_counter() - started >= max_seconds):
                stopped_early = True
                break
        if pending is not None:
            t3 = time.perf_counter()
            pending.result()
            timings["wait_writes"] += time.perf_counter() - t3
            pending = None
        finished = not stopped_early
        if report.records and report.bad > cfg.max_bad_fraction * report.records:
            raise BackfillError(_too_many_bad(report, cfg, bad_reasons))
        if finished:
            for p in shards.values():
                p.status = "done"
            progress.write(job, list(shards.values()))
        report.status = "done" if finished else "stopped"
    except BaseException:
        report.status = "failed"
        if pending is not None:
            try:
                pending.result()  # keep the last good checkpoint consistent before leaving
            except Exception:  # noqa: BLE001 - the original error is the one to raise
                pass
        raise
    finally:
        pool.shutdown(wait=True)
        if bar is not None:
            bar.close()
        if bad_file is not None:
            bad_file.close()
        report.seconds = time.perf_counter() - started
        report.events_per_s = report.events / report.seconds if report.seconds > 0 else 0.0
        report.bad_by_reason = dict(bad_reasons)
        report.timings = {k: round(v, 3) for k, v in timings.items()}
    return report


def _apply_bucketed(model: VistaModel, vocab: ItemVocab, model_version: str, rows: dict[str, SummaryRow | None],
                    events: list[SourcedEvent], cfg: BackfillSettings) -> ApplyResult:
    """apply_events over users of similar event counts at a time.

    One update call pads every user to the longest one; a log chunk mixes users with 1 and 500 events,
    so one call for the whole chunk spends most of its work on padding. Batch composition does not change
    any state (invariant 2), so this only changes speed and memory: the cell cap bounds the [B, T, H, d, d]
    scan tensors, the user cap the [B, K, 4D] seed intermediates of summarize.
    """
    grouped = group_by_user(events)
    order = sorted(grouped, key=lambda u: len(grouped[u]), reverse=True)
    batches: list[list[str]] = []
    current: list[str] = []
    width = real = 0
    for user in order:
        n = len(grouped[user])
        cells = (len(current) + 1) * width
        if current and (cells > cfg.batch_cells or real + n < cfg.min_fill * cells or len(current) >= cfg.batch_users):
            batches.append(current)
            current, real = [], 0
        if not current:
            width = n
        current.append(user)
        real += n
    if current:
        batches.append(current)
    out = ApplyResult(rows=[])
    for users in batches:
        part = apply_events(model, vocab, model_version, {u: rows.get(u) for u in users},
                            [e for u in users for e in grouped[u]], seeds_dtype=cfg.seeds_dtype)
        out.rows.extend(part.rows)
        out.applied += part.applied
        out.skipped += part.skipped
        out.oov += part.oov
        for k, v in part.timings.items():
            out.timings[k] = out.timings.get(k, 0.0) + v
    return out


def _write_and_checkpoint(store: RowStore, progress: ProgressStore | MemoryProgress, job: str,
                          rows: list[SummaryRow], checkpoint: list[ShardProgress]) -> None:
    store.write(rows)  # returns only when every row is acknowledged
    progress.write(job, checkpoint)


def _rows_for(events: list[SourcedEvent], cache: RowCache, store: RowStore,
              model_version: str) -> dict[str, SummaryRow | None]:
    users = list(dict.fromkeys(e.event.user_id for e in events))
    rows: dict[str, SummaryRow | None] = {}
    missing = []
    for u in users:
        row = cache.get(u)
        if row is None:
            missing.append(u)
        else:
            rows[u] = row
    if missing:
        rows.update(store.read(missing, model_version))
    return rows


def _out_of_order(events: list[SourcedEvent], rows: dict[str, SummaryRow | None]) -> int:
    """Events older than the same user's previous event (applied with time gap 0)."""
    last = {u: (r.last_ts if r is not None else -1) for u, r in rows.items()}
    count = 0
    for e in events:
        u, ts = e.event.user_id, e.event.timestamp
        if ts < last[u]:
            count += 1
        else:
            last[u] = ts
    return count


def _count_bad(bad: list[BadRecord], report: BackfillReport, reasons: Counter[str], out) -> None:
    for b in bad:
        report.bad += 1
        reasons[b.reason] += 1
        if len(report.bad_examples) < MAX_BAD_EXAMPLES:
            report.bad_examples.append({"location": b.location, "reason": b.reason, "detail": b.detail})
        if out is not None:
            out.write(json.dumps({"location": b.location, "reason": b.reason, "detail": b.detail, "raw": b.raw}) + "\n")


def _too_many_bad(report: BackfillReport, cfg: BackfillSettings, reasons: Counter[str]) -> str:
    first = "; ".join(f"{b['location']} {b['reason']} ({b['detail']})" for b in report.bad_examples[:5])
    return (f"{report.bad} of {report.records} records are bad (> {cfg.max_bad_fraction:.2%} allowed); stopped "
            f"after the last checkpoint. By reason: {dict(reasons)}; first: {first}")


def _progress_bar(cfg: BackfillSettings, source: FileSource | KafkaSource, total: int | None,
                  start: dict[str, Position]) -> Progress | None:
    """Bytes of a text file (its event count is unknown until read), else records; events/s and users in the
    postfix. A bar on a terminal, a line every 10 s otherwise."""
    if not cfg.progress_bar:
        return None
    if isinstance(source, FileSource) and total is None:
        done = start[source.shard].byte_offset
        return Progress(f"backfill {source.name}", total=source.size_bytes, initial=done, unit="B")
    return Progress(f"backfill {source.description}", total=total, unit="ev")
