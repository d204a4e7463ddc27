"""Fault soak: ~20 minutes of steady traffic with 1% bad events while the worker is killed, Cassandra is
paused and a second worker comes and goes; then every stored row is checked against a recompute.

    python -m benchmarks.fault_soak [--minutes 20] [--rate 200] [--users 2000] [--commit-results]

Against the local stack (`vista infra up`): a fresh topic, DLQ topic and untrained model (its own
model_version). During the run:
- a producer sends `--rate` events/s (acks=all); 1% are bad (malformed JSON, missing or unknown fields,
  wrong types, out-of-range or future timestamps, a key that is not the user, an empty value; every 250th
  bad one is a ~900 KB record near the broker's 1 MB limit);
- the worker (`vista worker`, a subprocess) is killed with SIGKILL every `--kill-every` seconds and started
  again; a second worker joins at 25% of the run and leaves (SIGTERM) at 45%;
- Cassandra is paused (SIGSTOP) for `--pause-s` seconds at 60%;
- the scorer (`vista serve`, pinned to the model) answers `--rps` requests/s for users already sent.
At the end (producer stopped, the group committed the topic's end): lost = users whose row holds fewer
events than were sent for them, double-applied = more; every row's state is compared with a one-shot
recompute (relative error); every bad event must be in the DLQ (by source partition and offset).
JSON + PNG go to runs/bench/ (benchmarks/results/ with --commit-results).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.output import Run, add_output_args, output_file
from benchmarks.scorer_latency import start_server

ML100K = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ml-100k" / "u.data"


# ---------------------------------------------------------------------------------------------- traffic
def bad_value(kind: int, user: str, ts: int) -> tuple[bytes, bytes, str]:
    """(key, value, expected reason) of the `kind`-th bad event (cycling through the kinds)."""
    def j(**fields: object) -> bytes:
        return json.dumps({"user_id": user, "item_id": "50", "action": 1, "timestamp": ts, **fields}).encode()

    k = user.encode()
    kinds = [
        (k, b'{"user_id": "' + k + b'", "item_id": ', "malformed_json"),
        (k, json.dumps({"user_id": user, "item_id": "50", "action": 1}).encode(), "missing_field"),
        (k, j(timestamp="yesterday"), "wrong_type"),
        (k, j(action=-1), "out_of_range"),
        (k, j(timestamp=32_503_680_000), "future_timestamp"),
        (k, j(color="red"), "unknown_field"),
        (k, b"", "empty"),
        (b"someone-else", j(), "key_mismatch"),
    ]
    if kind % 250 == 249:  # a record near the broker's 1 MB limit: once wedged the worker
        return k, j(pad="y" * 900_000), "oversized"
    return kinds[kind % len(kinds)]


@dataclass
class Traffic:
    """What the producer sent: good events in order, and every bad record's (partition, offset, reason)."""

    good: list = field(default_factory=list)
    bad: list[tuple[int, int, str]] = field(default_factory=list)
    error: BaseException | None = None


def produce(settings, topic: str, items: list[str], users: list[str], rate: float, bad_share: float,
            stop: threading.Event, traffic: Traffic, seed: int) -> None:
    """Send at `rate` events/s until `stop`; the bad records' offsets come from their send futures."""
    from schemas.events import InteractionEvent
    from stream.producer import encode_event, make_event_producer

    rng = random.Random(seed)
    producer = make_event_producer(settings, max_request_size=1_048_576)
    start_ts = int(time.time()) - 10 * 86_400  # event time runs 1 s per event from 10 days ago: never future
    pending_bad = []
    n = kinds = 0
    t0 = time.monotonic()
    try:
        while not stop.is_set():
            due = int((time.monotonic() - t0) * rate)
            while n < due:
                user = users[rng.randrange(len(users))]
                ts = start_ts + n
                if rng.random() < bad_share:
                    key, value, reason = bad_value(kinds, user, ts)
                    kinds += 1
                    pending_bad.append((producer.send(topic, key=key, value=value), reason))
                else:
                    event = InteractionEvent(user_id=user, item_id=items[rng.randrange(len(items))], action=1,
                                             timestamp=ts)
                    key, value = encode_event(event)
                    producer.send(topic, key=key, value=value)
                    traffic.good.append(event)
                n += 1
            time.sleep(0.01)
        producer.flush(timeout=120)
        for fut, reason in pending_bad:
            meta = fut.get(timeout=60)
            traffic.bad.append((meta.partition, meta.offset, reason))
    except BaseException as exc:  # noqa: BLE001 - reported by the run
        traffic.error = exc
    finally:
        producer.close()


@dataclass
class Probe:
    """Scorer requests: (seconds since start, latency s, HTTP status or 0 for a transport error)."""

    samples: list[tuple[float, float, int]] = field(default_factory=list)


def probe_scorer(url: str, traffic: Traffic, items: list[str], rps: float, stop: threading.Event, probe: Probe,
                 t0: float) -> None:
    import httpx

    rng = random.Random(1)
    with httpx.Client(base_url=url, timeout=5.0) as client:
        while not stop.is_set():
            tick = time.monotonic()
            if traffic.good:
                user = traffic.good[rng.randrange(len(traffic.good))].user_id
                body = {"user_id": user, "candidates": rng.sample(items, 100)}
                try:
                    status = client.post("/v1/score", json=body).status_code
                except httpx.HTTPError:
                    status = 0
                probe.samples.append((tick - t0, time.monotonic() - tick, status))
            time.sleep(max(0.0, 1.0 / rps - (time.monotonic() - tick)))


# ---------------------------------------------------------------------------------------------- processes
class Faults:
    """The schedule, applied from the main loop; each fault's window is recorded for the latency split."""

    def __init__(self, args: argparse.Namespace, start_worker, cassandra_pid: int):  # noqa: ANN001
        self.args, self.start_worker, self.cassandra_pid = args, start_worker, cassandra_pid
        self.duration = args.minutes * 60
        self.windows: list[tuple[str, float, float]] = []
        self.worker = start_worker("w1")
        self.second = None
        self.kills = 0
        self.next_kill = args.kill_every / 2
        self.paused_at: float | None = None
        self.done: set[str] = set()

    def step(self, t: float) -> None:
        if t >= self.next_kill and t < self.duration - 30:
            self.worker.kill()
            self.kills += 1
            self.worker = self.start_worker("w1")
            self.windows.append(("worker killed", t, t + 30))
            self.next_kill += self.args.kill_every
        if t >= 0.25 * self.duration and "join" not in self.done:
            self.done.add("join")
            self.second = self.start_worker("w2")
            self.windows.append(("second worker joins", t, t + 30))
        if t >= 0.45 * self.duration and "leave" not in self.done and self.second is not None:
            self.done.add("leave")
            self.second.terminate()
            self.windows.append(("second worker leaves", t, t + 30))
        if t >= 0.6 * self.duration and "pause" not in self.done:
            self.done.add("pause")
            os.kill(self.cassandra_pid, signal.SIGSTOP)
            self.paused_at = t
        if self.paused_at is not None and t >= self.paused_at + self.args.pause_s:
            os.kill(self.cassandra_pid, signal.SIGCONT)
            self.windows.append(("cassandra paused", self.paused_at, t + 30))
            self.paused_at = None

    def resume_cassandra(self) -> None:
        if self.paused_at is not None:
            os.kill(self.cassandra_pid, signal.SIGCONT)
            self.paused_at = None


# ---------------------------------------------------------------------------------------------- checks
def check_rows(settings, ckpt: Path, good: list) -> dict:
    """Lost / double-applied users and the worst relative state error against a one-shot recompute."""
    import torch

    from infra.cassandra import connect
    from models.checkpoint import load_checkpoint
    from schemas.codec import decode_tensor
    from stream.store import SummaryStore
    from tests.helpers import rel_err
    from tests.stream.util import recompute

    model, vocab, meta = load_checkpoint(ckpt)
    expected = recompute(model, vocab, meta["model_version"], good)
    session = connect(settings)
    try:
        stored = SummaryStore(session).read(list(expected), meta["model_version"])
    finally:
        session.cluster.shutdown()
    lost = double = mismatched = 0
    worst = 0.0
    with torch.no_grad():
        for user, (want, _) in expected.items():
            got = stored.get(user)
            if got is None or got.n < want.n:
                lost += 1
                continue
            if got.n > want.n:
                double += 1
                continue
            err = rel_err(decode_tensor(got.state), decode_tensor(want.state))
            worst = max(worst, err)
            mismatched += err > 1e-5
    return {"users": len(expected), "events": len(good), "lost_users": lost, "double_applied_users": double,
            "state_mismatches": mismatched, "worst_state_rel_err": worst}


def check_dlq(settings, dlq: str, bad: list[tuple[int, int, str]], topic: str) -> dict:
    from infra.kafka import make_consumer
    from schemas.source_keys import partition_key
    from stream.dlq import HEADER_OFFSET, HEADER_REASON, HEADER_SOURCE, parse_headers

    reader = make_consumer(settings, dlq, group_id=None, consumer_timeout_ms=10_000)
    try:
        letters = Counter()
        reasons = {}
        for m in reader:
            h = parse_headers(m.headers)
            letters[(h[HEADER_SOURCE], int(h[HEADER_OFFSET]))] += 1
            reasons[(h[HEADER_SOURCE], int(h[HEADER_OFFSET]))] = h[HEADER_REASON]
    finally:
        reader.close()
    sent = {(partition_key(topic, p), o): r for p, o, r in bad}
    missing = [k for k in sent if k not in letters]
    wrong = [k for k, r in sent.items() if k in reasons and reasons[k] != r]
    return {"bad_sent": len(sent), "bad_by_reason": dict(Counter(sent.values())), "missing_from_dlq": len(missing),
            "wrong_reason": len(wrong), "letters": sum(letters.values()),
            "letters_written_twice": sum(1 for c in letters.values() if c > 1)}


def latency_split(samples: list[tuple[float, float, int]], windows: list[tuple[str, float, float]]) -> dict:
    import numpy as np

    def stats(rows: list[tuple[float, float, int]]) -> dict:
        if not rows:
            return {"requests": 0}
        lat = np.array([r[1] for r in rows]) * 1000
        errors = sum(1 for r in rows if r[2] != 200)
        return {"requests": len(rows), "error_rate": errors / len(rows), "p50_ms": float(np.percentile(lat, 50)),
                "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(lat.max())}

    in_fault = [any(a <= s[0] <= b for _, a, b in windows) for s in samples]
    out = {"all": stats(samples), "during_faults": stats([s for s, f in zip(samples, in_fault) if f]),
           "outside_faults": stats([s for s, f in zip(samples, in_fault) if not f])}
    for name in sorted({w[0] for w in windows}):
        spans = [(a, b) for n, a, b in windows if n == name]
        out[name] = stats([s for s in samples if any(a <= s[0] <= b for a, b in spans)])
    return out


def plot(path: Path, samples: list[tuple[float, float, int]], windows: list[tuple[str, float, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4))
    ok = [(t, lat * 1000) for t, lat, s in samples if s == 200]
    bad = [(t, lat * 1000) for t, lat, s in samples if s != 200]
    if ok:
        ax.scatter(*zip(*ok), s=2, label="200")
    if bad:
        ax.scatter(*zip(*bad), s=6, color="red", label="error")
    colors = {"worker killed": "orange", "cassandra paused": "grey", "second worker joins": "green",
              "second worker leaves": "purple"}
    for name, a, b in windows:
        ax.axvspan(a, b, alpha=0.15, color=colors.get(name, "grey"), label=name)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="upper right")
    ax.set_yscale("log")
    ax.set_xlabel("seconds")
    ax.set_ylabel("scorer latency (ms)")
    ax.set_title("fault soak: scorer latency with faults shaded")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def keep_failed_logs(work: Path, name: str, commit_results: bool) -> None:
    """The tails of the processes' logs of a failed run, kept beside the results (the temp folder goes)."""
    keep = output_file(name, commit_results)
    keep.write_text("\n\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-20000:]}"
                                for p in sorted(work.glob("*.log"))))
    print(f"logs of the failed run: {keep}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--bad-share", type=float, default=0.01)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--kill-every", type=float, default=240.0, help="seconds between worker SIGKILLs")
    parser.add_argument("--pause-s", type=float, default=30.0, help="how long Cassandra is paused")
    parser.add_argument("--rps", type=float, default=20.0, help="scorer requests per second")
    parser.add_argument("--port", type=int, default=18090)
    add_output_args(parser)
    args = parser.parse_args()

    from infra import cassandra, local
    from infra.kafka import ensure_topics
    from infra.settings import InfraSettings
    from stream.producer import load_events
    from tests.stream.util import WorkerProcess, make_checkpoint, unique

    run = Run()
    settings = InfraSettings()
    local.up(settings)
    cassandra_pid = cassandra.running_pid(settings)
    if cassandra_pid is None:
        raise SystemExit("the soak pauses the local Cassandra: start it with `vista infra up`")
    items = sorted({e.item_id for e in load_events(ML100K)}, key=int)
    tag = uuid.uuid4().hex[:8]
    users = [f"soak-{tag}-{u}" for u in range(args.users)]
    topic, dlq, group = unique("soak"), unique("soak-dlq"), unique("soak-group")
    ensure_topics(settings, {topic: 4, dlq: 1})
    with tempfile.TemporaryDirectory(prefix="vista-soak-") as tmp:
        work = Path(tmp)
        ckpt = work / "ckpt"
        make_checkpoint(ckpt, items)
        logs = work  # worker and scorer logs go with the temporary folder, unless the run fails
        traffic, probe = Traffic(), Probe()
        stop_producer, stop_probe = threading.Event(), threading.Event()
        scorer = start_server(ckpt, args.port, threads=1, log=logs / "scorer.log")  # pinned to this model

        def start_worker(name: str) -> WorkerProcess:
            return WorkerProcess(logs / f"{name}.log", ckpt, topic, group, dlq, batch_events=500, batch_ms=100)

        t0 = time.monotonic()
        producer = threading.Thread(target=produce, args=(settings, topic, items, users, args.rate, args.bad_share,
                                                          stop_producer, traffic, 7), daemon=True)
        prober = threading.Thread(target=probe_scorer, args=(f"http://127.0.0.1:{args.port}", traffic, items,
                                                              args.rps, stop_probe, probe, t0), daemon=True)
        producer.start()
        prober.start()
        faults = Faults(args, start_worker, cassandra_pid)
        failure = None
        try:
            while (t := time.monotonic() - t0) < faults.duration:
                faults.step(t)
                if traffic.error is not None:
                    raise RuntimeError(f"producer failed: {traffic.error!r}")
                time.sleep(0.5)
            stop_producer.set()
            producer.join(timeout=300)
            if traffic.error is not None:
                raise RuntimeError(f"producer failed: {traffic.error!r}")
            drained_from = time.monotonic()
            from tests.stream.util import CommitWatcher, end_offsets

            watcher = CommitWatcher(settings, topic, group)
            try:
                watcher.wait_for(end_offsets(settings, topic), timeout=600, alive=faults.worker.alive)
            finally:
                watcher.close()
            drain_s = time.monotonic() - drained_from
        except BaseException as exc:
            failure = exc
            raise
        finally:
            faults.resume_cassandra()
            stop_probe.set()
            prober.join(timeout=30)
            for w in (faults.worker, faults.second):
                if w is not None and w.alive():
                    w.terminate()
            scorer.send_signal(signal.SIGTERM)
            scorer.wait(timeout=60)
            if failure is not None:
                keep_failed_logs(work, "fault_soak_failed_logs.txt", args.commit_results)
        wall = time.monotonic() - t0
        rows = check_rows(settings, ckpt, traffic.good)
        letters = check_dlq(settings, dlq, traffic.bad, topic)
    latency = latency_split(probe.samples, faults.windows)
    fault_counts = dict(Counter(name for name, _, _ in faults.windows))
    result = {
        "meta": run.metadata(),
        "config": {k: v for k, v in vars(args).items() if k != "commit_results"},
        "events_sent": len(traffic.good) + len(traffic.bad), "good_events": len(traffic.good),
        "faults": fault_counts, "worker_kills": faults.kills, "drain_after_stop_s": drain_s, "wall_s": wall,
        "rows": rows, "dlq": letters, "scorer": latency,
        "verdict": {"lost": rows["lost_users"], "double_applied": rows["double_applied_users"],
                    "state_mismatches": rows["state_mismatches"], "bad_missing_from_dlq": letters["missing_from_dlq"]},
    }
    out = output_file("fault_soak.json", args.commit_results)
    out.write_text(json.dumps(result, indent=2, default=str))
    plot(out.with_suffix(".png"), probe.samples, faults.windows)
    print(json.dumps({"verdict": result["verdict"], "faults": fault_counts, "events": result["events_sent"],
                      "scorer_during_faults": latency["during_faults"], "out": str(out)}, indent=2))
    ok = all(v == 0 for v in result["verdict"].values())
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
