"""Model versions and their lifecycle, stored in Cassandra (`model_versions`, infra/cql/040).

    backfilling --(a backfill of the version finishes)--> live --(vista versions drop)--> retired
                                                           |
                                   vista versions promote: the scorers serve it

- A version is registered (backfilling) when its first backfill starts, and becomes live when a backfill of
  it finishes (every shard). A rebuild of single users changes nothing here.
- A worker runs only for a live version: one started before the backfill would begin every user from an
  empty state. `--cold-start` runs it anyway (a version with no record at all is then recorded as live).
- One version, or none, is promoted; the scorers follow it. Only a live version can be promoted.
- Dropping retires the version (it never runs again), then deletes its rows; the promoted one cannot be dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from cassandra.cluster import Session

    from stream.store import ProgressStore

VersionState = Literal["backfilling", "live", "retired"]
REGISTRY = "default"


class VersionError(RuntimeError):
    """A lifecycle step that is not allowed (promote a version that is not live, run a retired one, ...)."""


@dataclass(frozen=True)
class VersionInfo:
    """One version's record."""

    model_version: str
    state: VersionState
    promoted: bool
    note: str
    rows_deleted: int
    created_at: datetime | None
    updated_at: datetime | None

    def as_dict(self) -> dict:
        return {"model_version": self.model_version, "state": self.state, "promoted": self.promoted,
                "note": self.note, "rows_deleted": self.rows_deleted,
                "created_at": _iso(self.created_at), "updated_at": _iso(self.updated_at)}


class VersionStore:
    """The `model_versions` table of one keyspace; statements prepared once per instance."""

    def __init__(self, session: Session, keyspace: str | None = None):
        ks = keyspace or session.keyspace
        if not ks:
            raise ValueError("VersionStore needs a keyspace")
        self.session = session
        table = f"{ks}.model_versions"
        self._all = session.prepare(f"SELECT model_version, state, promoted, note, rows_deleted, created_at, "
                                    f"updated_at FROM {table} WHERE registry = ?")
        self._promoted = session.prepare(f"SELECT promoted FROM {table} WHERE registry = ? LIMIT 1")
        self._create = session.prepare(f"INSERT INTO {table} (registry, model_version, state, note, rows_deleted, "
                                       "created_at, updated_at) VALUES (?, ?, ?, ?, 0, ?, ?) IF NOT EXISTS")
        self._set_state = session.prepare(f"UPDATE {table} SET state = ?, note = ?, updated_at = ? "
                                          "WHERE registry = ? AND model_version = ?")
        self._promote = session.prepare(f"UPDATE {table} SET promoted = ? WHERE registry = ?")
        self._deleted = session.prepare(f"UPDATE {table} SET rows_deleted = ?, updated_at = ? "
                                        "WHERE registry = ? AND model_version = ?")

    # ---- reading ----------------------------------------------------------------------------------
    def list(self) -> list[VersionInfo]:
        """Every recorded version, by name."""
        out = []
        for r in self.session.execute(self._all, (REGISTRY,)):
            if r.model_version is None:  # the partition holds only the static promoted cell
                continue
            out.append(VersionInfo(r.model_version, r.state, r.promoted == r.model_version, r.note or "",
                                   r.rows_deleted or 0, r.created_at, r.updated_at))
        return out

    def get(self, model_version: str) -> VersionInfo | None:
        return next((v for v in self.list() if v.model_version == model_version), None)

    def promoted(self) -> str | None:
        """The version the scorers serve (None: none promoted yet)."""
        row = self.session.execute(self._promoted, (REGISTRY,)).one()
        return row.promoted if row is not None else None

    # ---- transitions -------------------------------------------------------------------------------
    def register_backfill(self, model_version: str, job: str) -> VersionInfo:
        """A backfill of `model_version` starts: record it as backfilling unless it is known already.
        A retired version is refused: its rows were deleted and its name is spent."""
        now = _now()
        self.session.execute(self._create, (REGISTRY, model_version, "backfilling", f"backfill {job} started",
                                            now, now))
        info = self.get(model_version)
        if info is None:
            raise VersionError(f"model_version {model_version} was not recorded (concurrent drop?)")
        if info.state == "retired":
            raise VersionError(f"model_version {model_version} was dropped (retired): train or name a new version")
        return info

    def mark_live(self, model_version: str, note: str) -> None:
        """A backfill of the version finished (or it cold-starts): workers may run for it, it may be promoted."""
        info = self.get(model_version)
        if info is not None and info.state == "retired":
            raise VersionError(f"model_version {model_version} was dropped (retired); it cannot become live")
        if info is None:
            now = _now()
            self.session.execute(self._create, (REGISTRY, model_version, "live", note, now, now))
        elif info.state != "live":
            self.session.execute(self._set_state, ("live", note, _now(), REGISTRY, model_version))

    def promote(self, model_version: str) -> str | None:
        """Make the scorers serve `model_version` (it must be live); returns the version promoted before."""
        info = self.get(model_version)
        if info is None or info.state != "live":
            state = "unknown" if info is None else info.state
            raise VersionError(f"model_version {model_version} is {state}: only a live version (its backfill "
                               "finished) can be promoted")
        before = self.promoted()
        self.session.execute(self._promote, (model_version, REGISTRY))
        return before

    def retire(self, model_version: str) -> VersionInfo:
        """Mark the version retired (first step of a drop); the promoted version is refused."""
        info = self.get(model_version)
        if info is None:
            raise VersionError(f"model_version {model_version} is not recorded (see `vista versions list`)")
        if info.promoted:
            raise VersionError(f"model_version {model_version} is promoted (the scorers serve it): promote "
                               "another version first")
        if info.state != "retired":
            self.session.execute(self._set_state, ("retired", "dropped", _now(), REGISTRY, model_version))
        return info

    def record_deleted(self, model_version: str, rows: int) -> None:
        self.session.execute(self._deleted, (rows, _now(), REGISTRY, model_version))


def require_runnable(versions: VersionStore, progress: ProgressStore, model_version: str, *, cold_start: bool,
                     ckpt_hint: str = "<checkpoint>") -> str:
    """Whether a worker may run for `model_version`; returns why it may, raises VersionError if not.

    A version whose backfill finished before this table existed (or whose final mark was lost) is marked
    live here: the finished progress rows are the evidence."""
    info = versions.get(model_version)
    if info is not None and info.state == "retired":
        raise VersionError(f"model_version {model_version} was dropped (retired): its worker must not run")
    if info is not None and info.state == "live":
        return "live"
    finished = progress.finished_jobs(model_version)
    if finished:
        versions.mark_live(model_version, f"backfill {finished[0]} finished")
        return "live"
    if cold_start:
        if info is None:
            versions.mark_live(model_version, "cold start: no backfill")
        return "cold start"
    raise VersionError(f"model_version {model_version} has no finished backfill: its worker would start every "
                       f"user from an empty state. Run `vista backfill <log> --ckpt {ckpt_hint}` first, or pass "
                       "--cold-start to start without history")


def delete_rows(session: Session, keyspace: str, model_version: str, *, batch_size: int = 500,
                on_progress: Callable[[int, int], None] | None = None, page_size: int = 5000) -> tuple[int, int]:
    """Delete every `user_summaries` row of `model_version`: a paged full scan of the keys, deletes issued
    `batch_size` at a time concurrently; `on_progress(scanned, deleted)` after each batch. Idempotent: a
    rerun after an interruption deletes what is left. Returns (rows scanned, rows deleted)."""
    from cassandra.concurrent import execute_concurrent_with_args
    from cassandra.query import SimpleStatement

    delete = session.prepare(f"DELETE FROM {keyspace}.user_summaries WHERE user_id = ? AND model_version = ?")
    scan = SimpleStatement(f"SELECT user_id, model_version FROM {keyspace}.user_summaries", fetch_size=page_size)
    scanned = deleted = 0
    pending: list[tuple[str, str]] = []

    def flush() -> None:
        nonlocal deleted
        for ok, result in execute_concurrent_with_args(session, delete, pending, concurrency=64,
                                                       raise_on_first_error=False):
            if not ok:
                raise result
        deleted += len(pending)
        pending.clear()
        if on_progress is not None:
            on_progress(scanned, deleted)

    for row in session.execute(scan):
        scanned += 1
        if row.model_version == model_version:
            pending.append((row.user_id, model_version))
            if len(pending) >= batch_size:
                flush()
    if pending:
        flush()
    elif on_progress is not None:
        on_progress(scanned, deleted)
    return scanned, deleted


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.replace(tzinfo=timezone.utc).isoformat(timespec="seconds")
