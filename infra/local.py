"""The local stack as a whole: ``up``, ``down``, ``status``, ``reset``, ``init``.

    from infra.local import up, down, status, reset, init_schema_and_topics
    from infra.settings import InfraSettings

    settings = InfraSettings()          # VISTA_* environment
    report = up(settings)               # fetch jars if needed, start both, create schema+topics
    down(settings)

With ``settings.local_nodes == 3`` each of them acts on the local cluster profile instead
(``infra/cluster.py``: three Cassandra nodes and three Kafka brokers on 127.0.0.11-13).

Every function is idempotent. A file lock under ``data_dir`` serializes
concurrent calls on the same data directory (e.g. two pytest sessions).
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from infra import cassandra, cluster, jars, kafka, secured
from infra.proc import InfraError
from infra.settings import InfraSettings


@contextmanager
def _lock(settings: InfraSettings) -> Iterator[None]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with (settings.data_dir / ".infra.lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def fetch(settings: InfraSettings, *, force: bool = False) -> dict[str, float]:
    """Download the server jars unless cached; seconds spent per server (0.0 = cached)."""
    return jars.fetch_all(settings, force=force)


def init_schema_and_topics(settings: InfraSettings) -> dict[str, Any]:
    """Create (if missing) the keyspace, tables and topics; safe to run any number of times,
    against the local stack or a real cluster; never starts a server. Also returns what the servers hold
    afterwards ("keyspace_replication", "topics": partitions, replication factor, min.insync.replicas), since
    a keyspace or topic that existed before keeps its own settings."""
    t0 = time.monotonic()
    statements = cassandra.apply_schema(settings)
    t1 = time.monotonic()
    created = kafka.ensure_topics(settings)
    t2 = time.monotonic()
    return {
        "cql_statements": statements,
        "schema_seconds": t1 - t0,
        "topics_created": created,
        "topics_seconds": t2 - t1,
        "keyspace_replication": cassandra.keyspace_replication(settings),
        "topics": kafka.describe_topics(settings, list(settings.topic_partitions)),
    }


def up(settings: InfraSettings, *, init: bool = True) -> dict[str, Any]:
    """Start Kafka and Cassandra (no-op for the ones already running), wait until both answer,
    then create schema and topics. Returns timings: {"fetch": {...}, "kafka": {...},
    "cassandra": {...}, "init": {...}, "total_seconds"}, and with the secured and cluster profiles
    "client_env", the file of VISTA_* variables its clients need. With the cluster profile "kafka" and
    "cassandra" are lists (one report per node, with its "host")."""
    t0 = time.monotonic()
    with _lock(settings):
        report: dict[str, Any] = {"fetch": fetch(settings)}
        cluster.check_profile(settings)
        if cluster.is_cluster(settings):
            cluster.preflight(settings)
            report["client_env"] = str(cluster.write_client_env(settings))
            report.update(cluster.start(settings))
            if init:
                report["init"] = init_schema_and_topics(cluster.client_settings(settings))
            report["total_seconds"] = time.monotonic() - t0
            return report
        # Fail fast on busy ports and a data dir of the other profile before launching anything.
        kafka.preflight(settings)
        cassandra.preflight(settings)
        secured.check_profile(settings)
        client = settings
        if secured.is_secured(settings):
            material = secured.ensure(settings)
            client = secured.client_settings(settings, material)
            report["client_env"] = str(material.env_file)
        report.update(_start_both(settings))
        if init:
            report["init"] = init_schema_and_topics(client)
    report["total_seconds"] = time.monotonic() - t0
    return report


def _start_both(settings: InfraSettings) -> dict[str, Any]:
    """Start both servers in parallel threads (their JVM startups overlap); {server: report}."""
    import threading

    results: dict[str, Any] = {}
    errors: dict[str, BaseException] = {}

    def run(name: str, fn: Any) -> None:
        try:
            results[name] = fn(settings)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors[name] = exc

    threads = [
        threading.Thread(target=run, args=("cassandra", cassandra.start), daemon=True),
        threading.Thread(target=run, args=("kafka", kafka.start), daemon=True),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        # Leave nothing half-up: stop what this call started.
        for name, res in results.items():
            if res.get("started"):
                (kafka if name == "kafka" else cassandra).stop(settings)
        if len(errors) == 1:
            raise next(iter(errors.values()))
        raise InfraError("\n\n".join(f"[{name}] {exc}" for name, exc in errors.items()))
    return {"kafka": results["kafka"], "cassandra": results["cassandra"]}


def down(settings: InfraSettings) -> dict[str, bool]:
    """Stop both local servers (by pid, waiting for exit). {server: was_running}."""
    with _lock(settings):
        if cluster.is_cluster(settings):
            return cluster.stop(settings)
        return {"kafka": kafka.stop(settings), "cassandra": cassandra.stop(settings)}


def status(settings: InfraSettings) -> dict[str, dict[str, Any]]:
    """Health of both: local pid and RSS (if we run it) and whether it answers (per node for a cluster)."""
    if cluster.is_cluster(settings):
        return cluster.status(settings)
    return {"kafka": kafka.status(settings), "cassandra": cassandra.status(settings)}


def healthy(settings: InfraSettings) -> bool:
    """True if Kafka answers metadata requests and Cassandra answers CQL."""
    return bool(kafka.metadata_ok(settings)[0] and cassandra.cql_ok(settings)[0])


def reset(settings: InfraSettings) -> dict[str, bool]:
    """Stop both servers and delete their data, configs, logs and secured-profile material (the jar cache
    stays)."""
    with _lock(settings):
        if cluster.is_cluster(settings):
            stopped = cluster.stop(settings)
            cluster.wipe(settings)
            return stopped
        stopped = {"kafka": kafka.stop(settings), "cassandra": cassandra.stop(settings)}
        kafka.wipe(settings)
        cassandra.wipe(settings)
        secured.wipe(settings)
    return stopped
