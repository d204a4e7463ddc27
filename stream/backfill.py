"""Backfill: replay a historical log into stored summaries, resumable, handing over exactly to the live worker.

    resume or plan the job (stored shards and their end offsets / cut, or new ones)
      -> read a chunk of events (stream.sources) and count its bad records
      -> apply: rows of its users (LRU cache, else Cassandra) -> stream.apply.apply_events (the one update
         path: model.update over all users of the chunk at once)
      -> checkpoint: rows written concurrently (SummaryStore, in a writer thread overlapping the next chunk's
         compute), then the progress (stream.store.ProgressStore) once the chunk's rows are acknowledged
      -> finish: the last checkpoint awaited, the job marked done

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

Shards (scale-out). `shards=N, shard=I` backfills only the users whose id hashes to I (crc32 mod N), as a job
of its own (its own progress, resumable): run N processes, or N machines against one cluster, with the same
source. Users are independent, so the shards' rows are exactly those of one job. Every shard reads the whole
source (parsing runs at several times the update's speed, so N up to about the core count per reader
scales); beyond that, split the log by the same hash, or backfill from a Kafka topic keyed by user, where
partitions already split the users.

Rebuild. `rebuild_users` replays only those users, from an empty state whatever row they have (the worker
quarantines a row it cannot decode and sets its user's events aside). It is always a fresh job. From the Kafka
topic when it still holds the users' whole history; from a file, in two parts: the file's events up to the cut
its backfill used (`original_cut`), then `rebuild_live_part` applies the users' events on the live topic after
that cut on top (it refuses when the topic no longer holds them: the row would silently miss events).

Order: a user's events are applied in source order (file order; Kafka order per partition), as the live
worker applies them. A file whose lines are not time-ordered is replayed as written (sort it first, e.g.
`sort -t$'\\t' -k4,4n u.data`, if time order is wanted); events older than the user's previous one are
counted as `out_of_order` in the report (their time gap is 0).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol


from schemas.bad_records import BadRecord
from schemas.rows import SummaryRow
from schemas.source_keys import user_shard
from stream.apply import ApplyResult
from stream.backfill_settings import BackfillSettings
from stream.backfill_apply import apply_bucketed, out_of_order, rows_for, stamp_cut
from stream.progress import Progress
from stream.row_cache import RowCache
from stream.sources import Chunk, FileSource, KafkaSource, Position
from stream.store import REBUILD_MARK, ShardProgress

if TYPE_CHECKING:
    from models.vista import VistaModel
    from models.vocab import ItemVocab
    from stream.store import ProgressStore

MAX_BAD_EXAMPLES = 20
MIN_RECORDS_FOR_BAD_ABORT = 1000


class BackfillError(RuntimeError):
    """The backfill stopped (too many bad records, a failed write); progress up to the last checkpoint is kept."""


class RowStore(Protocol):
    """What the backfill needs of a row store (stream.store.SummaryStore)."""

    def read(self, user_ids: list[str], model_version: str) -> dict[str, SummaryRow | None]: ...

    def write(self, rows: list[SummaryRow]) -> None: ...


class JobProgress(Protocol):
    """What the backfill needs of its checkpoints (stream.store.ProgressStore)."""

    def read(self, job_id: str) -> dict[str, ShardProgress]: ...

    def write(self, job_id: str, shards: list[ShardProgress]) -> None: ...


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
    live_part: dict | None = None
    """A rebuild from a file: the report of its second part, the users' live events after the cut."""

    def as_dict(self) -> dict:
        return dict(vars(self))


def default_job_id(model_version: str, source: FileSource | KafkaSource, shards: int = 1, shard: int = 0) -> str:
    """Stable across reruns, so rerunning the same command resumes (or finds the job done); one per shard."""
    name = source.shard if isinstance(source, FileSource) else f"kafka:{source.topic}"
    return f"{model_version}/{name}" + (f"#shard{shard}of{shards}" if shards > 1 else "")


def run_backfill(
    model: VistaModel,
    vocab: ItemVocab,
    model_version: str,
    source: FileSource | KafkaSource,
    store: RowStore,
    progress: JobProgress,
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
    job = job_id or default_job_id(model_version, source, cfg.shards, cfg.shard)
    if cfg.rebuild_users and not job_id:  # a rebuild never resumes: it must start from every user's first event
        job += f"{REBUILD_MARK}{uuid.uuid4().hex[:12]}"
    report = BackfillReport(job_id=job, model_version=model_version, source=source.description)
    started = time.perf_counter()
    plan = _resume_or_plan(source, progress, job, model_version, handover)
    report.resumed, report.handover = plan.resumed, dict(plan.cut)
    start = plan.start()
    chunks = _read_chunks(source, plan, start, cfg)
    bad_file = open(bad_records_path, "a") if bad_records_path else None  # noqa: SIM115 - closed by _Run.close
    bar = _progress_bar(cfg, source, plan.total, start)
    run = _Run(model, vocab, model_version, store, progress, job, plan, cfg, report, bad_file, bar)
    stopped_early = False
    try:
        for chunk in chunks:
            run.count_bad(chunk)
            result = run.apply(chunk)
            run.checkpoint(chunk, result)
            run.show(chunk, started)
            if _time_to_stop(report, started, max_chunks, max_seconds):
                stopped_early = True
                break
        run.finish(finished=not stopped_early)
    except BaseException:
        run.abandon()
        raise
    finally:
        run.close(started)
    return report


@dataclass
class _Plan:
    """Where a job starts: its shards (positions; Kafka: end offsets), the file's cut, the records ahead."""

    shards: dict[str, ShardProgress]
    cut: dict[str, int]
    total: int | None
    resumed: bool

    def start(self) -> dict[str, Position]:
        return {s: Position(p.position, p.byte_offset) for s, p in self.shards.items()}


def _resume_or_plan(source: FileSource | KafkaSource, progress: JobProgress, job: str, model_version: str,
                    handover: dict[str, int] | None) -> _Plan:
    """The job's stored shards (a rerun resumes there), or new ones with the end offsets / cut taken now.

    Stored before the first row is written, so a resumed job keeps the end offsets and the cut it started with.
    """
    saved = progress.read(job)
    for p in saved.values():
        if p.model_version and p.model_version != model_version:
            raise BackfillError(f"job {job!r} was started with model_version {p.model_version}, not {model_version}")
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
    progress.write(job, list(shards.values()))
    return _Plan(shards, cut, total, resumed=bool(saved))


def _read_chunks(source: FileSource | KafkaSource, plan: _Plan, start: dict[str, Position],
                 cfg: BackfillSettings) -> Iterator[Chunk]:
    """The source's chunks after the start positions (Kafka: up to the job's end offsets), holding only this
    shard's users' events (every shard reads every record, and reports the bad ones)."""
    if isinstance(source, KafkaSource):
        ends = {s: p.end_position for s, p in plan.shards.items() if p.end_position is not None}
        chunks = source.chunks(start, ends, cfg.chunk_events)
    else:
        chunks = source.chunks(start, cfg.chunk_events)
    wanted = set(cfg.rebuild_users) | set(cfg.only_users)
    for chunk in chunks:
        if cfg.shards > 1 or wanted:
            users = chunk.events.users
            mine = {u: user_shard(u, cfg.shards) == cfg.shard and (not wanted or u in wanted) for u in set(users)}
            chunk.events = chunk.events.take([i for i, u in enumerate(users) if mine[u]])
        yield chunk


def _time_to_stop(report: BackfillReport, started: float, max_chunks: int | None, max_seconds: float | None) -> bool:
    return (max_chunks is not None and report.chunks >= max_chunks) or (
        max_seconds is not None and time.perf_counter() - started >= max_seconds)


@dataclass
class _Run:
    """One run over a job's chunks: count, apply, checkpoint each, then finish. Owns the writer thread, in which
    a chunk's rows and then its checkpoint are written while the next chunk is computed (one in flight)."""

    model: VistaModel
    vocab: ItemVocab
    model_version: str
    store: RowStore
    progress: JobProgress
    job: str
    plan: _Plan
    cfg: BackfillSettings
    report: BackfillReport
    bad_file: IO[str] | None
    bar: Progress | None
    cache: RowCache = field(init=False)
    pool: ThreadPoolExecutor = field(init=False)
    pending: Future | None = None
    users_seen: set[str] = field(default_factory=set)
    not_rebuilt: set[str] = field(init=False)
    bad_reasons: Counter[str] = field(default_factory=Counter)
    timings: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.cache = RowCache(int(self.cfg.cache_mb * 2**20))
        self.not_rebuilt = set(self.cfg.rebuild_users)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backfill-writer")

    def count_bad(self, chunk: Chunk) -> None:
        """Count the chunk's records and report its bad ones; stop once too many are bad."""
        report = self.report
        _count_bad(chunk.bad, report, self.bad_reasons, self.bad_file)
        report.records += chunk.records
        report.events += len(chunk.events)
        if report.records >= MIN_RECORDS_FOR_BAD_ABORT and report.bad > self.cfg.max_bad_fraction * report.records:
            raise BackfillError(_too_many_bad(report, self.cfg, self.bad_reasons))

    def apply(self, chunk: Chunk) -> ApplyResult:
        """The chunk's events on top of their users' rows (cache, else the store); rows stamped with the cut."""
        report = self.report
        t0 = time.perf_counter()
        rows = rows_for(chunk.events, self.cache, self.store, self.model_version)
        floors: dict[str, int] = {}
        for user in self.not_rebuilt.intersection(rows):  # start from an empty state: the stored row is ignored
            old = rows[user]
            floors[user] = old.generation + 1 if old is not None else 0
            rows[user] = None
            self.not_rebuilt.discard(user)
        t1 = time.perf_counter()
        report.out_of_order += out_of_order(chunk.events, rows)
        cfg = self.cfg
        result = apply_bucketed(self.model, self.vocab, self.model_version, rows, chunk.events,
                                batch_cells=cfg.batch_cells, min_fill=cfg.min_fill, batch_users=cfg.batch_users,
                                seeds_dtype=cfg.seeds_dtype)
        t2 = time.perf_counter()
        for row in result.rows:  # a rebuilt row outranks the one it replaces, whatever their event counts
            if row.user_id in floors:
                row.generation = max(row.generation, floors[row.user_id])
        stamp_cut(result.rows, self.plan.cut)
        self.cache.put(result.rows)
        report.applied += result.applied
        report.skipped += result.skipped
        report.oov += result.oov
        report.rows_written += len(result.rows)
        self.users_seen.update(r.user_id for r in result.rows)
        report.users = len(self.users_seen)
        report.chunks += 1
        for k, v in result.timings.items():
            self.timings[k] += v
        self.timings["read_rows"] += t1 - t0
        self.timings["apply"] += t2 - t1
        return result

    def checkpoint(self, chunk: Chunk, result: ApplyResult) -> None:
        """Hand the rows and then the positions after the chunk to the writer, once the previous chunk's are durable."""
        report = self.report
        for s, pos in chunk.positions.items():
            p = self.plan.shards[s]
            p.position, p.byte_offset = pos.position, pos.byte_offset
        for p in self.plan.shards.values():
            p.events, p.applied, p.skipped = report.events, report.applied, report.skipped
            p.bad_lines, p.users = report.bad, report.users
        snapshot = [ShardProgress(**vars(p)) for p in self.plan.shards.values()]
        self._wait_writes()
        self.pending = self.pool.submit(_write_and_checkpoint, self.store, self.progress, self.job, result.rows,
                                        snapshot)

    def show(self, chunk: Chunk, started: float) -> None:
        if self.bar is not None:
            report = self.report
            elapsed = time.perf_counter() - started
            self.bar.update(chunk.bytes_read if self.plan.total is None else chunk.records, events=report.events,
                            users=report.users, bad=report.bad, ev_s=f"{report.events / max(elapsed, 1e-9):,.0f}")

    def finish(self, finished: bool) -> None:
        """Await the last checkpoint, check the bad share once more, mark the job done (unless stopped early)."""
        self._wait_writes()
        report = self.report
        if report.records and report.bad > self.cfg.max_bad_fraction * report.records:
            raise BackfillError(_too_many_bad(report, self.cfg, self.bad_reasons))
        if finished:
            for p in self.plan.shards.values():
                p.status = "done"
            self.progress.write(self.job, list(self.plan.shards.values()))
        report.status = "done" if finished else "stopped"

    def abandon(self) -> None:
        """On any error: let the checkpoint in flight land, so the last good one stays consistent."""
        self.report.status = "failed"
        if self.pending is not None:
            try:
                self.pending.result()
            except Exception:  # noqa: BLE001 - the original error is the one to raise
                pass

    def close(self, started: float) -> None:
        """Release the writer, the bar and the bad-records file; complete the report's totals."""
        self.pool.shutdown(wait=True)
        if self.bar is not None:
            self.bar.close()
        if self.bad_file is not None:
            self.bad_file.close()
        report = self.report
        report.seconds = time.perf_counter() - started
        report.events_per_s = report.events / report.seconds if report.seconds > 0 else 0.0
        report.bad_by_reason = dict(self.bad_reasons)
        report.timings = {k: round(v, 3) for k, v in self.timings.items()}

    def _wait_writes(self) -> None:
        if self.pending is not None:
            t = time.perf_counter()
            self.pending.result()  # the previous chunk's rows and checkpoint are durable
            self.timings["wait_writes"] += time.perf_counter() - t
            self.pending = None


def _write_and_checkpoint(store: RowStore, progress: JobProgress, job: str,
                          rows: list[SummaryRow], checkpoint: list[ShardProgress]) -> None:
    store.write(rows)  # returns only when every row is acknowledged
    progress.write(job, checkpoint)


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


def original_cut(progress: ProgressStore, model_version: str, source: FileSource) -> dict[str, int]:
    """The live topic's cut ("topic:partition" -> last offset the file covers) that the finished backfill of
    this file under `model_version` stamped; raises when there is none, or several that differ (shards that
    started at different times: then the operator gives the cut)."""
    cuts = []
    for job, states in progress.job_states(model_version).items():
        if all(x == "done" for x in states):
            cuts += [p.handover for p in progress.read(job).values() if p.shard == source.shard]  # by file name
    distinct = {tuple(sorted(c.items())) for c in cuts}
    if len(distinct) != 1:
        what = "no finished backfill of" if not distinct else f"{len(distinct)} different cuts for"
        raise BackfillError(f"{what} {source.description} under {model_version}: give the cut the file was "
                            "exported at with --handover-offsets")
    return dict(next(iter(distinct)))


def rebuild_live_part(model: VistaModel, vocab: ItemVocab, model_version: str, topic: KafkaSource, store: RowStore,
                      progress: JobProgress, *, users: list[str], cut: dict[str, int], job_id: str,
                      settings: BackfillSettings | None = None) -> BackfillReport:
    """After a file rebuilt `users` up to `cut`: their events on the live topic after the cut, applied on top,
    up to the topic's end now (the worker, whose offsets are past them, skips what this applied)."""
    begin = topic.beginning_offsets()
    gone = {s: (cut.get(s, -1) + 1, b) for s, b in begin.items() if b > cut.get(s, -1) + 1}
    if gone:
        raise BackfillError(f"{topic.description} no longer holds the events after the file's cut "
                            f"({ {s: f'offsets {a}..{b - 1}' for s, (a, b) in gone.items()} }): the rebuilt rows "
                            "would miss them; rebuild from a log that holds them")
    shards = [ShardProgress(s, position=cut.get(s, -1), end_position=end, model_version=model_version,
                            source=topic.description) for s, end in topic.end_offsets().items()]
    progress.write(job_id, shards)  # the job starts at the cut: run_backfill resumes there
    cfg = (settings or BackfillSettings()).model_copy(update={"rebuild_users": [], "only_users": list(users)})
    return run_backfill(model, vocab, model_version, topic, store, progress, job_id=job_id, settings=cfg)

