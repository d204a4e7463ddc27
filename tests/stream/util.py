"""Helpers of the stream tests: checkpoints, unique topics, waiting for commits, one-shot recomputes."""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from infra.settings import InfraSettings
from models.checkpoint import save_checkpoint
from models.config import ModelConfig
from models.state import EventBatch
from models.vista import VistaModel
from models.vocab import ItemVocab
from schemas.codec import decode_tensor
from schemas.events import InteractionEvent
from schemas.rows import SummaryRow
from stream.rows import rows_from_states, states_from_rows
from tests.helpers import rel_err

ML100K = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ml-100k" / "u.data"
TOL = 1e-5


def make_checkpoint(directory: Path, items: list[str]) -> str:
    """A small untrained model over `items`, seeded randomly so every test gets its own model_version
    (rows are keyed by (user, model_version): tests never see each other's rows on the shared Cassandra)."""
    torch.manual_seed(uuid.uuid4().int % 2**31)
    vocab = ItemVocab.build(items, oov_buckets=8)
    model = VistaModel(ModelConfig(num_items=len(vocab), dim=32, heads=4, num_seeds=16, recent=10, oov_buckets=8,
                                   target_readout=True))  # the whole model: its rows carry seeds too
    return save_checkpoint(directory, model.eval(), vocab)


def unique(name: str) -> str:
    return f"test-{name}-{uuid.uuid4().hex[:10]}"


def new_topic(settings: InfraSettings, name: str, partitions: int) -> str:
    from infra.kafka import ensure_topics

    topic = unique(name)
    ensure_topics(settings, {topic: partitions})
    return topic


def produce(settings: InfraSettings, topic: str, events: list[InteractionEvent]) -> None:
    """Send `events` keyed by user and wait until the broker acknowledged every one."""
    from stream.producer import make_event_producer, send_events

    producer = make_event_producer(settings)
    try:
        assert send_events(producer, topic, events) == len(events)
    finally:
        producer.close()


def end_offsets(settings: InfraSettings, topic: str) -> dict[int, int]:
    from kafka import TopicPartition

    from infra.kafka import make_consumer

    c = make_consumer(settings)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        return {tp.partition: o for tp, o in c.end_offsets(parts).items()}
    finally:
        c.close()


def read_topic(settings: InfraSettings, topic: str) -> list:
    """Every record of `topic` from the start (a group-less consumer that stops after 5 s of silence)."""
    from infra.kafka import make_consumer

    reader = make_consumer(settings, topic, group_id=None, consumer_timeout_ms=5000)
    try:
        return list(reader)
    finally:
        reader.close()


class CommitWatcher:
    """Reads a group's committed offsets without joining it."""

    def __init__(self, settings: InfraSettings, topic: str, group: str):
        from kafka import TopicPartition

        from infra.kafka import make_consumer

        self.consumer = make_consumer(settings, group_id=group)
        parts = self.consumer.partitions_for_topic(topic) or set()
        self.parts = [TopicPartition(topic, p) for p in sorted(parts)]

    def committed(self) -> dict[int, int]:
        out = {}
        for tp in self.parts:
            # kafka-python caches committed offsets of assigned partitions only; we own none, so this asks the broker
            off = self.consumer.committed(tp)
            out[tp.partition] = off if off is not None else 0
        return out

    def wait_for(self, target: dict[int, int], timeout: float, alive: Callable[[], bool] = lambda: True) -> None:
        deadline = time.monotonic() + timeout
        while True:
            got = self.committed()
            if all(got.get(p, 0) >= o for p, o in target.items()):
                return
            if not alive():
                raise AssertionError(f"worker died before committing {target}; committed {got}")
            if time.monotonic() > deadline:
                raise AssertionError(f"offsets {target} not committed within {timeout}s; committed {got}")
            time.sleep(0.2)

    def close(self) -> None:
        self.consumer.close()


def recompute(model: VistaModel, vocab: ItemVocab, version: str,
              events: list[InteractionEvent]) -> dict[str, tuple[SummaryRow, torch.Tensor]]:
    """One-shot recompute: every user's full event list (arrival order) in one update call.
    Per user: the row it would store and its fp32 seeds (before the fp16 storage rounding)."""
    per_user: dict[str, list[InteractionEvent]] = defaultdict(list)
    for e in events:
        per_user[e.user_id].append(e)
    users = list(per_user)
    flat = [e for u in users for e in per_user[u]]
    batch = EventBatch(torch.tensor([vocab.index(e.item_id) for e in flat]), torch.tensor([e.action for e in flat]),
                       torch.tensor([e.timestamp for e in flat]), torch.tensor([len(per_user[u]) for u in users]))
    with torch.no_grad():
        states = model.update(model.init_state(len(users)), batch)
        summary = model.summarize(states)
    rows = rows_from_states(users, version, states, summary)
    return {r.user_id: (r, summary.seeds[i].float()) for i, r in enumerate(rows)}


def assert_rows_match(stored: dict[str, SummaryRow | None], expected: dict[str, tuple[SummaryRow, torch.Tensor]],
                      model: VistaModel) -> dict[str, float]:
    """Every expected user has a row equal to the one-shot recompute: state ≤ 1e-5 relative; the fp32 seeds
    of the stored state (what the worker computed before the fp16 storage rounding) ≤ 1e-5 relative; the
    stored fp16 seeds within fp16 rounding (≤ 1e-3); n, last_ts and the recent items exact.
    Returns the worst errors seen."""
    missing = [u for u in expected if stored.get(u) is None]
    assert not missing, f"{len(missing)} users have no stored row, e.g. {missing[:5]}"
    users = list(expected)
    got_rows = [stored[u] for u in users]
    for user, got in zip(users, got_rows):
        want = expected[user][0]
        assert got.n == want.n, f"user {user}: n {got.n} != {want.n} (an event lost or applied twice)"
        assert got.last_ts == want.last_ts, f"user {user}: last_ts {got.last_ts} != {want.last_ts}"
        assert decode_tensor(got.recent_items).tolist() == decode_tensor(want.recent_items).tolist()
    with torch.no_grad():
        seeds32 = model.summarize(states_from_rows(got_rows)).seeds.float()
    worst = {"state": 0.0, "seeds_fp32": 0.0, "seeds_stored_fp16": 0.0}
    for i, user in enumerate(users):
        want, want_seeds = expected[user]
        worst["state"] = max(worst["state"], rel_err(decode_tensor(stored[user].state), decode_tensor(want.state)))
        worst["seeds_fp32"] = max(worst["seeds_fp32"], rel_err(seeds32[i], want_seeds))
        worst["seeds_stored_fp16"] = max(worst["seeds_stored_fp16"],
                                         rel_err(decode_tensor(stored[user].seeds).float(), want_seeds))
    assert worst["state"] <= TOL, f"worst state error {worst}"
    assert worst["seeds_fp32"] <= TOL, f"worst seeds error {worst}"
    assert worst["seeds_stored_fp16"] <= 1e-3, f"worst stored-seeds error {worst}"
    return worst


def assert_stored_rows_match(settings: InfraSettings, ckpt: Path, events: list[InteractionEvent]
                             ) -> dict[str, tuple[SummaryRow, torch.Tensor]]:
    """Every user's row, read on a session of its own with `settings` (a private or secured server), equals a
    one-shot recompute of `events` under the checkpoint's model; returns the recompute."""
    from infra.cassandra import connect
    from models.checkpoint import load_checkpoint
    from stream.store import SummaryStore

    model, vocab, meta = load_checkpoint(ckpt)
    expected = recompute(model, vocab, meta["model_version"], events)
    session = connect(settings)
    try:
        stored = SummaryStore(session).read(expected, meta["model_version"])
    finally:
        session.cluster.shutdown()
    assert_rows_match(stored, expected, model)
    return expected


class WorkerProcess:
    """`vista worker` as a subprocess (so it can be SIGKILLed); its log goes to a file."""

    def __init__(self, log_path: Path, ckpt: Path, topic: str, group: str, dlq: str, *, batch_events: int = 200,
                 batch_ms: int = 50, metrics_port: int = 0, env: dict[str, str] | None = None):
        import os
        import subprocess
        import sys

        self.log_path = log_path
        cmd = [sys.executable, "-m", "cli", "worker", "--ckpt", str(ckpt), "--topic", topic, "--group", group,
               "--dlq-topic", dlq, "--batch-events", str(batch_events), "--batch-ms", str(batch_ms),
               "--threads", "1", "--backoff-max", "2", "--session-timeout-ms", "6000",
               "--metrics-port", str(metrics_port), "--cold-start"]
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})}, cwd=Path(__file__).resolve().parents[2])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_log(self, text: str, timeout: float = 120, count: int = 1) -> None:
        """Wait until `text` appears `count` times in the log (e.g. '"partitions_assigned"')."""
        deadline = time.monotonic() + timeout
        while self.log().count(text) < count:
            if not self.alive():
                raise AssertionError(f"worker exited ({self.proc.returncode}):\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in the worker log after {timeout}s:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def totals(self) -> dict[str, float]:
        """The counters the worker logged when it stopped (applied, skipped, dlq, oov)."""
        import json

        for line in reversed(self.log().splitlines()):
            if '"worker_stopped"' in line:
                return json.loads(line[line.index("{"):])["totals"]
        raise AssertionError(f"no worker_stopped line in the log:\n{self.log()[-2000:]}")

    def kill(self) -> None:
        import signal

        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._log.close()

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM and wait; returns the exit code."""
        import signal

        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self._log.close()
        return rc


class BackgroundProducer:
    """Sends events at a fixed rate on a thread (live traffic while workers die and come back)."""

    def __init__(self, settings: InfraSettings, topic: str, events: list[InteractionEvent], rate: float):
        import threading

        from stream.producer import make_event_producer, send_events

        self.error: BaseException | None = None
        self.sent = 0  # events handed to the producer so far (for failure messages)
        producer = make_event_producer(settings)

        def counted() -> Iterator[InteractionEvent]:
            for event in events:
                yield event
                self.sent += 1

        def run() -> None:
            try:
                send_events(producer, topic, counted(), rate=rate)
            except BaseException as exc:  # noqa: BLE001 - re-raised by join()
                self.error = exc
            finally:
                producer.close()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self, timeout: float = 120) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "producer did not finish"
        if self.error:
            raise self.error


@contextmanager
def running_worker(config, settings) -> Iterator:  # noqa: ANN001
    """A Worker consuming on a background thread; stopped (current batch finished) on exit."""
    from stream.worker import Worker

    worker = Worker(config, settings)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            worker.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="worker", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=60)
        assert not thread.is_alive(), "worker did not stop within 60 s"
    if errors:
        raise errors[0]


@contextmanager
def worker_caught_up(config, settings: InfraSettings, timeout: float = 120) -> Iterator:  # noqa: ANN001
    """A running worker (its config's topic and group) once the group has committed every partition of the
    topic to its end; stopped on exit."""
    watcher = CommitWatcher(settings, config.topic, config.group_id)
    try:
        with running_worker(config, settings) as worker:
            watcher.wait_for(end_offsets(settings, config.topic), timeout=timeout)
            yield worker
    finally:
        watcher.close()
