"""Node loss on the local 3-node cluster: while the worker streams and the scorer serves, one Cassandra node and
one Kafka broker are killed with SIGKILL, then brought back; afterwards every row must equal a recompute.

    python -m benchmarks.node_loss [--minutes 5] [--kill-at 60] [--outage-s 60] [--node 1] [--commit-results]

Runs against `vista infra up --nodes 3` (started here if it does not run; the start time and the RSS of the
six JVMs are recorded). A fresh topic (RF 3, min.insync.replicas 2), DLQ topic and untrained model (its own
model_version); the worker (`vista worker`) and the scorer (`vista serve`, pinned to the model) are
subprocesses with the cluster's client settings (LOCAL_QUORUM, acks=all). During the run:
- a producer sends `--rate` events/s (acks=all) for `--users` users; the scorer gets `--rps` requests/s;
- at `--kill-at` s, Cassandra and Kafka on node `--node` (127.0.0.1<node>) get SIGKILL; `--outage-s` later
  both start again;
- every `--audit-every` s the group's committed offsets are read, then every row at LOCAL_QUORUM. After the
  run each snapshot is checked: every event below a committed offset must be in its user's row
  (`applied_offsets`). A miss would be an offset committed before its quorum write.
At the end (producer stopped, the group committed the topic's end): lost = users whose row holds fewer events
than were sent for them, double-applied = more; every state is compared with a one-shot recompute.
JSON + PNG go to runs/bench/ (benchmarks/results/ with --commit-results).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.fault_soak import (ML100K, Probe, Traffic, check_rows, keep_failed_logs, latency_split, plot,
                                   probe_scorer, produce)
from benchmarks.output import Run, add_output_args, output_file
from benchmarks.scorer_latency import start_server


# ---------------------------------------------------------------------------------------------- the cluster
def jvm_memory(settings) -> dict[str, float | None]:  # noqa: ANN001
    """RSS (MiB) of each of the cluster's JVMs, and their sum."""
    from infra import cassandra, cluster, kafka
    from infra.proc import rss_mb

    out: dict[str, float | None] = {}
    for node in cluster.nodes(settings):
        for name, module in (("kafka", kafka), ("cassandra", cassandra)):
            pid = module.running_pid(settings, node)
            out[f"{name} {node.host}"] = rss_mb(pid) if pid else None
    out["total"] = sum(v for v in out.values() if v)
    return out


@dataclass
class Outage:
    """Kill both servers of one node, later start them again (on a thread: Cassandra takes a while)."""

    settings: Any
    node: Any
    killed_at: float | None = None
    restart_at: float | None = None
    back_at: float | None = None
    restart_seconds: dict[str, float] = field(default_factory=dict)
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def kill(self, t: float) -> None:
        from infra import cassandra, kafka
        from infra.proc import pid_alive

        for module in (cassandra, kafka):
            pid = module.running_pid(self.settings, self.node)
            if pid is None:
                raise RuntimeError(f"{module.__name__} on {self.node.host} does not run")
            os.kill(pid, signal.SIGKILL)
            while pid_alive(pid):  # reaps it if this process started it (no zombie left behind)
                time.sleep(0.05)
        self.killed_at = t

    def restart(self, t: float, t0: float) -> None:
        self.restart_at = t
        self.thread = threading.Thread(target=self._restart, args=(t0,), daemon=True)
        self.thread.start()

    def _restart(self, t0: float) -> None:
        from infra import cassandra, kafka
        from infra.cluster import in_threads

        try:
            started = in_threads({name: (lambda m=module: m.start(self.settings, self.node))
                                   for name, module in (("kafka", kafka), ("cassandra", cassandra))})
            self.restart_seconds = {name: r["seconds"] for name, r in started.items()}
            self.back_at = time.monotonic() - t0
        except BaseException as exc:  # noqa: BLE001 - reported by the run
            self.error = exc


# ---------------------------------------------------------------------------------------------- commit audit
@dataclass
class Audit:
    """Snapshots of (seconds, the group's committed offsets, each user's applied offsets read after them)."""

    snapshots: list[tuple[float, dict[int, int], dict[str, dict[str, int]]]] = field(default_factory=list)
    read_errors: list[str] = field(default_factory=list)


def audit_commits(client, topic: str, group: str, version: str, users: list[str], every: float,  # noqa: ANN001
                  stop: threading.Event, audit: Audit, t0: float) -> None:
    """Committed offsets first, rows (LOCAL_QUORUM) second: a row can only be newer than the commit it is
    checked against, never older, unless the commit came before the quorum write."""
    from infra.cassandra import connect
    from stream.store import SummaryStore
    from tests.stream.util import CommitWatcher

    watcher = CommitWatcher(client, topic, group)
    session = connect(client)
    store = SummaryStore(session)
    try:
        while not stop.wait(every):
            t = time.monotonic() - t0
            try:
                committed = watcher.committed()
                rows = store.read(users, version, with_state=False)
            except Exception as exc:  # noqa: BLE001 - counted: an unreadable snapshot proves nothing
                audit.read_errors.append(f"{t:.1f}s: {type(exc).__name__}: {exc}"[:300])
                continue
            audit.snapshots.append((t, committed, {u: dict(r.applied_offsets) for u, r in rows.items() if r}))
    finally:
        watcher.close()
        session.cluster.shutdown()


def check_audit(client, topic: str, audit: Audit) -> dict[str, Any]:  # noqa: ANN001
    """Events below a committed offset missing from their user's row, over every snapshot."""
    from schemas.source_keys import partition_key
    from tests.stream.util import read_topic

    by_partition: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for record in read_topic(client, topic):
        by_partition[record.partition].append((record.offset, record.key.decode()))
    violations, examples, checked = 0, [], 0
    for t, committed, applied in audit.snapshots:
        for p, records in by_partition.items():
            last: dict[str, int] = {}
            for offset, user in records:
                if offset >= committed.get(p, 0):
                    break
                last[user] = offset
            key = partition_key(topic, p)
            for user, offset in last.items():
                checked += 1
                if applied.get(user, {}).get(key, -1) < offset:
                    violations += 1
                    if len(examples) < 5:
                        examples.append({"t": round(t, 1), "user": user, "partition": p, "offset": offset,
                                         "committed": committed.get(p), "row": applied.get(user, {}).get(key)})
    return {"snapshots": len(audit.snapshots), "read_errors": len(audit.read_errors),
            "read_error_examples": audit.read_errors[:3], "user_offsets_checked": checked,
            "committed_before_quorum_write": violations, "examples": examples}


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="traffic duration")
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rps", type=float, default=20.0, help="scorer requests per second")
    parser.add_argument("--kill-at", type=float, default=60.0, help="seconds into the run")
    parser.add_argument("--outage-s", type=float, default=60.0, help="seconds until the killed servers restart")
    parser.add_argument("--node", type=int, default=1, choices=(1, 2, 3), help="the node whose servers die")
    parser.add_argument("--audit-every", type=float, default=3.0, help="seconds between commit audits")
    parser.add_argument("--port", type=int, default=18091)
    add_output_args(parser)
    args = parser.parse_args()

    from infra import cluster, local
    from infra.kafka import ensure_topics
    from infra.settings import InfraSettings
    from stream.producer import load_events
    from tests.stream.util import CommitWatcher, WorkerProcess, end_offsets, make_checkpoint, unique

    run = Run()
    settings = InfraSettings(local_nodes=3)
    t_up = time.monotonic()
    report = local.up(settings)
    startup = {"seconds": time.monotonic() - t_up,
               "started": [f"{name} {r['host']}" for name in ("kafka", "cassandra") for r in report[name]
                           if r["started"]],
               "per_node_ready_s": {f"{name} {r['host']}": round(r["seconds"], 1) for name in ("kafka", "cassandra")
                                    for r in report[name]}}
    memory_start = jvm_memory(settings)
    client = cluster.client_settings(settings)
    # the subprocesses (worker, scorer) read the cluster's client settings from the environment
    for key in [k for k in os.environ if k.startswith("VISTA_")]:
        del os.environ[key]
    os.environ.update(cluster.client_env(settings))

    items = sorted({e.item_id for e in load_events(ML100K)}, key=int)
    tag = uuid.uuid4().hex[:8]
    users = [f"nodeloss-{tag}-{u}" for u in range(args.users)]
    topic, dlq, group = unique("nodeloss"), unique("nodeloss-dlq"), unique("nodeloss-group")
    ensure_topics(client, {topic: 8, dlq: 1})
    node = cluster.nodes(settings)[args.node - 1]
    outage = Outage(settings, node)
    with tempfile.TemporaryDirectory(prefix="vista-nodeloss-") as tmp:
        work = Path(tmp)
        ckpt = work / "ckpt"
        version = make_checkpoint(ckpt, items)
        traffic, probe, audit = Traffic(), Probe(), Audit()
        stop_producer, stop_probe, stop_audit = threading.Event(), threading.Event(), threading.Event()
        scorer = start_server(ckpt, args.port, threads=1, log=work / "scorer.log")  # pinned to this model
        worker = WorkerProcess(work / "worker.log", ckpt, topic, group, dlq, batch_events=500, batch_ms=100)
        t0 = time.monotonic()
        threads = [
            threading.Thread(target=produce, args=(client, topic, items, users, args.rate, 0.0, stop_producer,
                                                   traffic, 7), daemon=True),
            threading.Thread(target=probe_scorer, args=(f"http://127.0.0.1:{args.port}", traffic, items, args.rps,
                                                        stop_probe, probe, t0), daemon=True),
            threading.Thread(target=audit_commits, args=(client, topic, group, version, users, args.audit_every,
                                                         stop_audit, audit, t0), daemon=True),
        ]
        for th in threads:
            th.start()
        failure: BaseException | None = None
        try:
            while (t := time.monotonic() - t0) < args.minutes * 60:
                if outage.killed_at is None and t >= args.kill_at:
                    outage.kill(t)
                    print(f"{t:6.1f}s killed Cassandra and Kafka on {node.host}", file=sys.stderr)
                if outage.restart_at is None and t >= args.kill_at + args.outage_s:
                    outage.restart(t, t0)
                    print(f"{t:6.1f}s restarting them", file=sys.stderr)
                for what, err in (("producer", traffic.error), ("restart", outage.error)):
                    if err is not None:
                        raise RuntimeError(f"{what} failed: {err!r}")
                if not worker.alive():
                    raise RuntimeError(f"worker exited:\n{worker.log()[-3000:]}")
                time.sleep(0.5)
            stop_producer.set()
            threads[0].join(timeout=300)
            if traffic.error is not None:
                raise RuntimeError(f"producer failed: {traffic.error!r}")
            if outage.thread is not None:
                outage.thread.join(timeout=600)
            if outage.error is not None or outage.back_at is None:
                raise RuntimeError(f"the killed servers did not come back: {outage.error!r}")
            drained_from = time.monotonic()
            watcher = CommitWatcher(client, topic, group)
            try:
                watcher.wait_for(end_offsets(client, topic), timeout=600, alive=worker.alive)
            finally:
                watcher.close()
            drain_s = time.monotonic() - drained_from
            time.sleep(args.audit_every * 1.5)  # one audit of the final commit
        except BaseException as exc:
            failure = exc
            raise
        finally:
            for ev in (stop_probe, stop_audit):
                ev.set()
            for th in threads[1:]:
                th.join(timeout=60)
            worker_rc = worker.terminate()
            scorer.send_signal(signal.SIGTERM)
            scorer.wait(timeout=60)
            worker_log = worker.log()
            if failure is not None:
                keep_failed_logs(work, "node_loss_failed_logs.txt", args.commit_results)
        wall = time.monotonic() - t0
        rows = check_rows(client, ckpt, traffic.good)
    commits = check_audit(client, topic, audit)
    # outage = from the kill until both servers answer again: "down" (dead) + "restarting" (starting up,
    # catching up); "recovery" = the 30 s after
    windows = [("down", outage.killed_at, outage.restart_at), ("restarting", outage.restart_at, outage.back_at),
               ("recovery", outage.back_at, outage.back_at + 30)]
    latency = latency_split(probe.samples, windows)
    latency["outage"] = latency_split(probe.samples, [("outage", outage.killed_at, outage.back_at)])["outage"]
    result = {
        "meta": run.metadata(),
        "config": {k: v for k, v in vars(args).items() if k != "commit_results"},
        "cluster": {"nodes": 3, "cassandra_replication": client.cassandra_replication,
                    "consistency": client.cassandra_consistency, "topic_replication_factor": 3,
                    "min_insync_replicas": 2, "producer_acks": "all", "startup": startup,
                    "jvm_rss_mib_start": memory_start, "jvm_rss_mib_end": jvm_memory(settings)},
        "outage": {"node": node.host, "killed_at_s": outage.killed_at, "restarted_at_s": outage.restart_at,
                   "back_at_s": outage.back_at, "restart_ready_s": outage.restart_seconds},
        "events_sent": len(traffic.good), "drain_after_stop_s": drain_s, "wall_s": wall,
        "worker": {"exit_code": worker_rc, "retries_logged": worker_log.count('"retrying"'),
                   "rebalances": worker_log.count('"partitions_assigned"')},
        "rows": rows, "commit_audit": commits, "scorer": latency,
        "verdict": {"lost": rows["lost_users"], "double_applied": rows["double_applied_users"],
                    "state_mismatches": rows["state_mismatches"],
                    "committed_before_quorum_write": commits["committed_before_quorum_write"]},
    }
    out = output_file("node_loss.json", args.commit_results)
    out.write_text(json.dumps(result, indent=2, default=str))
    plot(out.with_suffix(".png"), probe.samples, windows)
    print(json.dumps({"verdict": result["verdict"], "events": len(traffic.good), "scorer_outage": latency["outage"],
                      "startup_s": round(startup["seconds"], 1), "jvm_rss_mib": round(memory_start["total"]),
                      "out": str(out)}, indent=2))
    ok = all(v == 0 for v in result["verdict"].values()) and commits["snapshots"] > 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
