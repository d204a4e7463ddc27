"""The stream worker: Kafka `events` -> micro-batches -> `apply_events` -> Cassandra, exactly-once in effect.

Loop (one thread, no event loop; torch and the sync Cassandra driver run here, nothing else waits on it):
    gather up to N records or T ms -> decode (bad ones to the DLQ) -> read the touched users' rows
    (in-process cache first) -> apply_events (one ragged update + one summarize) -> write every row
    -> DLQ acknowledged and rows acknowledged -> commit offsets -> cache the written rows.

Why kafka-python and not faust: the invariant is "offsets are committed only after the Cassandra write
is acknowledged", plus "pause and commit nothing while Cassandra is down". faust commits the offsets of
*acked* events from its own timer, `take_events` acks a batch even when the body raises, and pausing
its aiokafka consumer from inside an agent while the rebalance machinery keeps running is not a
supported path; making those guarantees hold would mean fighting the framework. A plain consumer with
enable_auto_commit=False and an explicit `commit(offsets)` after the writes makes them hold by
construction, and is easy to prove against a real broker (tests/stream).

Failure behaviour:
- Cassandra (or the DLQ topic) unreachable: the batch is retried with capped exponential backoff; the
  assigned partitions are paused and `poll` keeps the group membership alive; nothing is committed.
- Rebalance: the cache is dropped and any uncommitted batch is abandoned; partitions still assigned are
  sought back to the first dropped record at once (`seek` is local, no broker call). That must not wait
  for "assigned": kafka-python 2.3 can finish a leader's metadata-triggered rejoin in the background
  without ever calling on_partitions_assigned, keeping the old assignment and positions, and a deferred
  rewind then never ran: the dropped records were skipped and later commits went past them (seen once
  in CI as 200 of 3000 events never applied). A completed reassignment resets positions to the
  committed offset anyway; partitions that move restart from it at their new owner, which skips
  already-applied events by the rows' offsets.
- SIGTERM: the current batch is finished and committed, then the worker exits. SIGKILL: uncommitted
  events are redelivered to the next owner and the applied offsets stop them from applying twice.
- A worker that stalls past a rebalance and then writes (a zombie) cannot replace a newer row: every write's
  timestamp is the row's generation * 2^32 + events_seen (stream/store.py), which grows with the state, and
  Cassandra keeps the write with the larger timestamp (tests/stream/test_fenced_writes.py).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from kernels.dispatch import BACKEND_HELP, BackendChoice
from schemas.source_keys import partition_key
from stream.metrics import WorkerMetrics
from stream.row_cache import RowCache

if TYPE_CHECKING:
    from infra.settings import InfraSettings
    from schemas.rows import SummaryRow
    from stream.apply import ApplyResult, EventColumns

log = logging.getLogger("vista.worker")
T = TypeVar("T")


class WorkerConfig(BaseModel):
    """What one worker consumes, how it batches, and how it behaves under faults."""

    model_config = ConfigDict(extra="forbid")

    ckpt: Path = Field(description="checkpoint directory (models/checkpoint.py); its model_version keys the rows")
    topic: str | None = Field(None, description="input topic; None = settings.topic_events")
    dlq_topic: str | None = Field(None, description="dead-letter topic; None = settings.topic_events_dlq")
    group_id: str | None = Field(None, description="Kafka consumer group of the workers of one model version "
                                 "(None: vista-workers-<model_version>, so two versions running side by side "
                                 "each consume every event)")
    cold_start: bool = Field(False, description="start although no backfill of this model_version has finished: "
                             "every user without a row then starts from an empty state (a new deployment with no "
                             "history; else run `vista backfill` first)")
    batch_max_events: int = Field(5000, ge=1, description="close a micro-batch at this many records")
    batch_max_ms: int = Field(200, ge=1, description="... or after this many milliseconds")
    max_event_bytes: int = Field(16 * 1024, ge=64, description="larger payloads go to the DLQ as 'oversized'")
    max_future_s: float = Field(86_400.0, ge=0, description="events stamped more than this many seconds after now "
                                "go to the DLQ as 'future_timestamp'")
    device: str = Field("auto", description="'auto' (cuda when present, else cpu), 'cpu', 'cuda', 'cuda:1', ...")
    backend: BackendChoice = Field("auto", description=BACKEND_HELP)
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads (None = torch default)")
    update_chunk: int = Field(32, ge=1, description="time chunk of the ragged update (small: little padding "
                              "of short users to the batch's longest; measured 2-3x faster than 1024 on CPU)")
    cache_mb: float = Field(512.0, ge=0, description="MiB of rows kept in the in-process cache (0 = only the last "
                            "batch's; ~8.4 KiB a row for the general model)")
    backoff_initial_s: float = Field(0.5, gt=0, description="first retry delay when Cassandra/DLQ fails")
    backoff_max_s: float = Field(10.0, gt=0, description="cap of the exponential retry delay")
    metrics_port: int = Field(9464, ge=0, le=65535, description="serve Prometheus /metrics on this port (0 = off; "
                              "each worker on a host needs its own)")
    metrics_host: str = Field("127.0.0.1", description="address /metrics binds (0.0.0.0: reachable by a scraper "
                              "on another machine)")
    seeds_dtype: Literal["float16", "int8q"] = Field("float16", description="stored seed precision")
    until_caught_up: bool = Field(False, description="exit once every assigned partition is consumed and "
                                  "committed up to its end (demos, one-off catch-up runs)")
    session_timeout_ms: int = Field(10_000, ge=6000, description="group session timeout: how soon a killed "
                                    "worker's partitions move to the others (broker minimum 6 s)")
    client_id: str = Field("vista-worker", description="Kafka client id (shows up in broker logs)")
    progress_interval_s: float = Field(10.0, gt=0, description="log a 'progress' line (totals, events/s) this often")


class _Abandon(Exception):
    """The current batch is dropped uncommitted (rebalance, or stop requested during an outage)."""


_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _log(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """One structured log line: `event` is the message, the fields become JSON keys (cli/logs.py)."""
    extra = {(f"{k}_" if k in _RESERVED else k): v for k, v in fields.items()}
    log.log(level, event, extra={"event": event, **extra})


class Worker:
    """One consumer in the worker group. `run()` blocks until `stop()` (or SIGTERM/SIGINT)."""

    def __init__(self, config: WorkerConfig, settings: InfraSettings, *, metrics: WorkerMetrics | None = None):
        import torch
        from models.checkpoint import load_checkpoint
        from kernels.dispatch import resolve_backend
        from models.device import resolve_device

        self.config, self.settings = config, settings
        self.topic = config.topic or settings.topic_events
        self.dlq_topic = config.dlq_topic or settings.topic_events_dlq
        if config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        self.model, self.vocab, meta = load_checkpoint(config.ckpt, device=resolve_device(config.device))
        self.model.backend = resolve_backend(config.backend, self.model.device, self.model.cfg.head_dim)
        self.model_version: str = meta["model_version"]
        self.group_id = config.group_id or f"vista-workers-{self.model_version}"
        self.metrics = metrics or WorkerMetrics()
        if config.metrics_port:  # first: a taken port fails before any connection is opened
            self.metrics.serve(config.metrics_port, config.metrics_host)
        self.cache = RowCache(int(config.cache_mb * 2**20))
        self.stage_seconds: dict[str, float] = defaultdict(float)  # totals, for benchmarks
        self.committed: dict[Any, int] = {}  # TopicPartition -> next offset, as committed
        self._to_commit: dict[Any, int] = {}
        self._stopping = threading.Event()
        self._rebalanced = False  # a revocation or assignment happened during the last poll
        self._rejoining = False  # revoked, and no sign of membership since (see _settled)
        self._paused = False

        try:
            self._connect(config, settings)
        except BaseException:
            self.metrics.close()
            raise

    def _connect(self, config: WorkerConfig, settings: InfraSettings) -> None:
        """Cassandra, the DLQ producer and the consumer, subscribed once the topics are known."""
        from cassandra.policies import ConstantReconnectionPolicy
        from kafka import ConsumerRebalanceListener

        from infra.cassandra import connect
        from infra.kafka import make_consumer, make_producer
        from stream.dlq import DeadLetterQueue
        from stream.store import SummaryStore

        # Reconnect every second while Cassandra is down (the default backs off to 10 minutes).
        self.session = connect(settings, reconnection_policy=ConstantReconnectionPolicy(1.0, max_attempts=None))
        self.store = SummaryStore(self.session)
        try:
            self._require_runnable_version()
        except Exception:
            self.session.cluster.shutdown()
            raise
        self.dlq = DeadLetterQueue(make_producer(settings, client_id=f"{config.client_id}-dlq"), self.dlq_topic)
        self.consumer = make_consumer(settings, group_id=self.group_id, client_id=config.client_id,
                                      max_poll_records=config.batch_max_events,
                                      session_timeout_ms=config.session_timeout_ms,
                                      heartbeat_interval_ms=max(1000, config.session_timeout_ms // 3))
        worker = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):  # noqa: ANN001 - kafka-python's signature
                worker._on_revoked(revoked)

            def on_partitions_assigned(self, assigned):  # noqa: ANN001
                worker._on_assigned(assigned)

        # Know the topic's partitions before joining: a leader that assigns without metadata hands out
        # nothing and must rejoin when the metadata arrives (kafka-python 3.0 can stall in that rejoin).
        self._wait_for_topic()
        self._ensure_dlq_topic()
        self.consumer.subscribe([self.topic], listener=Listener())
        _log("worker_started", topic=self.topic, group=self.group_id, model_version=self.model_version,
             device=str(self.model.device), batch_max_events=config.batch_max_events,
             batch_max_ms=config.batch_max_ms)

    def _require_runnable_version(self) -> None:
        """Refuse to start a model version whose rows were never backfilled (its worker would start every user
        from an empty state and the rows would silently miss their history), or one that was dropped."""
        from stream.store import ProgressStore
        from stream.versions import VersionStore, require_runnable

        ks = self.settings.cassandra_keyspace
        why = require_runnable(VersionStore(self.session, ks), ProgressStore(self.session, ks), self.model_version,
                               cold_start=self.config.cold_start, ckpt_hint=str(self.config.ckpt))
        _log("version_checked", model_version=self.model_version, state=why)

    def _wait_for_topic(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.consumer.partitions_for_topic(self.topic):
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {self.topic!r} has no partitions after {timeout_s:.0f}s (does it exist?)")
            time.sleep(0.2)

    def _ensure_dlq_topic(self) -> None:
        """Create the dead-letter topic if it is missing, or fail now with its name: found missing only when
        the first bad event arrives, it stalled the partition behind a 60 s timeout that named no topic."""
        from infra.kafka import ensure_topics

        try:
            created = ensure_topics(self.settings, {self.dlq_topic: 1})
        except Exception as exc:  # noqa: BLE001 - any failure here is fatal, with the topic named
            raise RuntimeError(f"dead-letter topic {self.dlq_topic!r} does not exist and could not be created "
                               f"({type(exc).__name__}: {exc}); create it or pass --dlq-topic") from exc
        if created:
            _log("dlq_topic_created", topic=self.dlq_topic)

    # ---- lifecycle ------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: finish (and commit) the current batch, then leave the group (main thread only)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: self.stop())

    def totals(self) -> dict[str, float]:
        """Records by outcome so far (applied, skipped as already applied, dlq, set aside for a quarantined
        row) and OOV events."""
        out = {k: self.metrics.events.labels(k)._value.get() for k in ("applied", "skipped", "dlq", "quarantined")}
        out["oov"] = self.metrics.oov._value.get()
        out["dlq_undeliverable"] = self.dlq.undeliverable
        return out

    def stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self) -> None:
        """Consume until stopped; always closes the clients."""
        started = last_report = time.monotonic()
        try:
            while not self.stopping:
                now = time.monotonic()
                if now - last_report >= self.config.progress_interval_s:
                    last_report = now
                    totals = self.totals()
                    handled = sum(totals[k] for k in ("applied", "skipped", "dlq", "quarantined"))  # every record
                    _log("progress", **totals, events_per_s=round(handled / (now - started), 1))
                records = self._gather()
                if not records:
                    if self.config.until_caught_up and self._caught_up():
                        _log("caught_up", **self.totals())
                        break
                    continue
                try:
                    self._process(records)
                except _Abandon as why:
                    _log("batch_abandoned", logging.WARNING, reason=str(why), records=len(records))
                    self._drop(records)
                    self._resume()
        finally:
            self.close()

    def close(self) -> None:
        """Leave the group without committing anything more, close producer and session."""
        try:
            self.consumer.close(autocommit=False)
        finally:
            try:
                self.dlq.close()
            finally:
                self.metrics.close()
                self.session.cluster.shutdown()
                _log("worker_stopped",
                     committed={partition_key(tp.topic, tp.partition): o for tp, o in self.committed.items()},
                     totals=self.totals())

    # ---- consuming ------------------------------------------------------------------------------
    def _on_revoked(self, revoked: Any) -> None:
        self._rebalanced = True
        self._rejoining = True
        self.cache.clear()
        self.metrics.rebalances.inc()
        self.metrics.cache_users.set(0)
        for tp in revoked:
            self._to_commit.pop(tp, None)
        _log("partitions_revoked", partitions=sorted(tp.partition for tp in revoked))

    def _on_assigned(self, assigned: Any) -> None:
        self._rebalanced = True
        self._rejoining = False
        _log("partitions_assigned", partitions=sorted(tp.partition for tp in assigned))

    def _poll(self, timeout_ms: int, max_records: int) -> list | None:
        """Records in partition order, or None if a rebalance happened during this poll: then the records it
        returned are dropped here and the caller must `_drop` the batch it holds."""
        self._rebalanced = False
        got = self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        records = [r for recs in got.values() for r in recs]
        if self._rebalanced:
            self._drop(records)
            return None
        return records

    def _drop(self, records: list) -> None:
        """Forget uncommitted records: every partition still assigned is sought back to its first dropped
        offset now, so no later batch (or commit) can pass over them. A partition reassigned afterwards
        restarts from its committed offset, which is never past a dropped record."""
        from kafka import TopicPartition

        first: dict[Any, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            first[tp] = min(first.get(tp, r.offset), r.offset)
        owned = self.consumer.assignment()
        for tp, offset in first.items():
            if tp in owned:  # a partition that went elsewhere restarts from the committed offset there
                self.consumer.seek(tp, offset)

    def _settled(self) -> bool:
        """Group membership is stable. Our own flag, or kafka-python's coordinator state for the rejoin it
        completes without calling on_partitions_assigned (2.3; private attribute, hence the fallback)."""
        if not self._rejoining:
            return True
        coordinator = getattr(self.consumer, "_coordinator", None)
        try:
            from kafka.coordinator.base import MemberState

            stable = coordinator.state == MemberState.STABLE and not coordinator.need_rejoin()
        except Exception:  # an internal layout we do not know: keep waiting for on_partitions_assigned
            return False
        if stable:
            self._rejoining = False
        return stable

    def _gather(self) -> list:
        """Up to batch_max_events records or whatever arrived in batch_max_ms (ends early on stop)."""
        cfg = self.config
        t0 = time.perf_counter()
        deadline = time.monotonic() + cfg.batch_max_ms / 1000
        batch: list = []
        while len(batch) < cfg.batch_max_events and not self.stopping:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 and batch:
                break
            got = self._poll(max(left_ms, 0) if batch else max(left_ms, 50), cfg.batch_max_events - len(batch))
            if got is None:
                self._drop(batch)
                batch = []
                deadline = time.monotonic() + cfg.batch_max_ms / 1000
                continue
            batch.extend(got)
            if not got and time.monotonic() >= deadline:
                break
        self.stage_seconds["poll"] += time.perf_counter() - t0
        return batch

    # ---- one micro-batch ------------------------------------------------------------------------
    def _process(self, records: list) -> None:
        from kafka import TopicPartition

        from stream.decode import decode_batch

        cfg, m = self.config, self.metrics
        t_start = time.perf_counter()
        ends: dict[tuple[str, int], int] = {}
        for r in records:
            ends[(r.topic, r.partition)] = r.offset + 1
        next_offsets = {TopicPartition(topic, p): end for (topic, p), end in ends.items()}
        events, letters = decode_batch(records, cfg.max_event_bytes, max_future_s=cfg.max_future_s)
        t = self._stage("decode", t_start)

        refused_before = self.dlq.undeliverable
        self._retry("dlq", lambda: self.dlq.publish(letters))
        self.metrics.dlq_undeliverable.inc(self.dlq.undeliverable - refused_before)
        t = self._stage("dlq", t)

        users = list(dict.fromkeys(events.users))
        rows: dict[str, SummaryRow | None] = {u: self.cache.get(u) for u in users}
        missing = [u for u, row in rows.items() if row is None]
        if missing:
            rows.update(self._retry("read", lambda: self.store.read(missing, self.model_version)))
        t = self._stage("read", t)

        result, quarantined = self._apply(rows, events)
        t_apply = time.perf_counter()
        for stage, seconds in result.timings.items():  # decode_state, update, summarize, encode
            self.stage_seconds[stage] += seconds
            m.stage_latency.labels(stage).observe(seconds)
        self.stage_seconds["apply_other"] += (t_apply - t) - sum(result.timings.values())
        t = t_apply

        self._retry("write", lambda: self.store.write(result.rows))
        t = self._stage("write", t)

        # Every row and dead letter of this batch is acknowledged: now (and only now) the offsets may go.
        for tp, offset in next_offsets.items():
            self._to_commit[tp] = max(self._to_commit.get(tp, 0), offset)
        self._retry("commit", self._commit)
        self._stage("commit", t)
        self._resume()

        for u, row in rows.items():
            if row is not None and u not in quarantined:  # a corrupt row is never cached: reread once rebuilt
                self.cache.put(row)
        for row in result.rows:
            self.cache.put(row)
        m.cache_users.set(len(self.cache))
        m.events.labels("applied").inc(result.applied)
        m.events.labels("skipped").inc(result.skipped)
        m.events.labels("dlq").inc(len(letters))
        for letter in letters:
            m.dlq.labels(letter.reason).inc()
        m.oov.inc(result.oov)
        m.batches.inc()
        m.batch_size.observe(len(records))
        m.batch_latency.observe(time.perf_counter() - t_start)
        self._update_lag()

    def _apply(self, rows: dict[str, SummaryRow | None], events: EventColumns) -> tuple[ApplyResult, set[str]]:
        """apply_events, with corrupt stored rows quarantined: a row whose blobs do not decode is logged with
        its user id and counted, kept as it is in Cassandra for inspection, and its user's events in this
        batch are set aside, so the partition goes on. A backfill of that user rebuilds the row from the log
        (`vista backfill ... --rebuild-user ID`); the next batch with the user's events reads the row again."""
        from schemas.codec import BlobError
        from stream.apply import apply_events
        from stream.rows import states_from_rows

        cfg = self.config

        def apply(rows_now: dict[str, SummaryRow | None], events_now: EventColumns) -> ApplyResult:
            return apply_events(self.model, self.vocab, self.model_version, rows_now, events_now,
                                seeds_dtype=cfg.seeds_dtype, chunk_size=cfg.update_chunk)

        try:
            return apply(rows, events), set()
        except BlobError:
            bad: dict[str, str] = {}
            for user, row in rows.items():
                try:
                    if row is not None:
                        states_from_rows([row])
                except BlobError as exc:
                    bad[user] = str(exc)
            if not bad:
                raise
        for user, reason in bad.items():
            set_aside = events.users.count(user)
            _log("row_quarantined", logging.ERROR, user_id=user, model_version=self.model_version,
                 reason=reason[:300], events_set_aside=set_aside)
            self.metrics.quarantined.inc()
            self.metrics.events.labels("quarantined").inc(set_aside)
        keep = [i for i, u in enumerate(events.users) if u not in bad]
        return apply({u: r for u, r in rows.items() if u not in bad}, events.take(keep)), set(bad)

    def _stage(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self.stage_seconds[name] += now - since
        self.metrics.stage_latency.labels(name).observe(now - since)
        return now

    def _commit(self) -> None:
        from kafka.errors import CommitFailedError
        from kafka.structs import OffsetAndMetadata

        if not self._to_commit:
            return
        offsets = {tp: OffsetAndMetadata(o, "", -1) for tp, o in self._to_commit.items()}
        try:
            self.consumer.commit(offsets=offsets)
        except CommitFailedError as exc:
            # The group moved on: the rows are written, the new owner re-reads them and skips these events.
            # Positions stay past this batch; the revocation that follows clears cache and pending commits.
            _log("commit_failed_rebalanced", logging.WARNING, error=str(exc))
            self.cache.clear()
            return
        self.committed.update(self._to_commit)
        self._to_commit.clear()

    def _caught_up(self) -> bool:
        """Every assigned partition committed up to its current end (False while unassigned)."""
        assigned = self.consumer.assignment()
        if not assigned or not self._settled() or self._to_commit:
            return False
        ends = self.consumer.end_offsets(list(assigned))
        return all(self.committed.get(tp, self.consumer.position(tp)) >= end for tp, end in ends.items())

    def _update_lag(self) -> None:
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            done = self.committed.get(tp)
            if high is not None and done is not None:
                self.metrics.lag.labels(str(tp.partition)).set(max(0, high - done))

    # ---- faults ---------------------------------------------------------------------------------
    def _retry(self, stage: str, fn: Callable[[], T]) -> T:
        """Run `fn` until it succeeds; between attempts pause consumption and back off (capped)."""
        delay = self.config.backoff_initial_s
        while True:
            try:
                return fn()
            except Exception as exc:
                if not _retryable(exc):
                    raise
                self.metrics.retries.labels(stage).inc()
                if not self._paused:
                    self.consumer.pause(*self.consumer.assignment())
                    self._paused = True
                    self.metrics.paused.set(1)
                _log("retrying", logging.WARNING, stage=stage, delay_s=round(delay, 3), error=str(exc)[:300])
                self._wait(delay)
                delay = min(delay * 2, self.config.backoff_max_s)

    def _wait(self, seconds: float) -> None:
        """Sleep while polling (partitions paused) so the group keeps us; abandon on rebalance or stop."""
        end = time.monotonic() + seconds
        while True:
            if self.stopping:
                raise _Abandon("stop requested while retrying: nothing committed")
            left = end - time.monotonic()
            if left <= 0:
                return
            got = self._poll(int(min(left, 0.2) * 1000), 1)
            if got is None:
                raise _Abandon("rebalance while retrying")
            if got:  # cannot happen while paused; never let a record slip past uncommitted work
                self._drop(got)
                raise _Abandon("records arrived on paused partitions")

    def _resume(self) -> None:
        if self._paused:
            paused = self.consumer.paused()
            if paused:
                self.consumer.resume(*paused)
            self._paused = False
            self.metrics.paused.set(0)
            _log("resumed")


def _retryable(exc: BaseException) -> bool:
    """Unreachable or failing servers (worth waiting for), as opposed to bugs (which must surface)."""
    from cassandra import DriverException, RequestExecutionException
    from cassandra.cluster import NoHostAvailable
    from kafka.errors import KafkaError

    from stream.store import StoreError

    return isinstance(exc, (StoreError, KafkaError, OSError, TimeoutError, DriverException,
                            RequestExecutionException, NoHostAvailable))
