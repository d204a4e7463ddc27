"""The local cluster profile (``vista infra up --nodes 3``, ``VISTA_LOCAL_NODES=3``).

Three Cassandra nodes and three Kafka brokers on this machine, each on a loopback address of its own
(127.0.0.11-13, the standard ports; ``infra/nodes.py``), so replication, quorums and node loss are exercised
against real servers while the single-node stack on 127.0.0.1 keeps running:

- Cassandra: every node a seed with its own token (nobody bootstraps), GossipingPropertyFileSnitch in data
  center ``dc1``, hinted handoff on; the keyspace is NetworkTopologyStrategy ``{'dc1': 3}``.
- Kafka: three KRaft nodes in combined mode (a controller quorum of three, formatted with one cluster id);
  every topic, the committed offsets included, has RF 3 and min.insync.replicas 2.
- Clients: contact points and bootstrap servers list the three nodes; reads and writes are LOCAL_QUORUM in
  ``dc1``; the producer sends with acks=all. ``<data_dir>/client.env`` holds those ``VISTA_*`` settings::

    set -a; . ~/.cache/vista-stream/cluster/client.env; set +a
    vista worker --ckpt ...

In code, :func:`client_settings` gives the same settings.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infra import cassandra, kafka
from infra.nodes import DATACENTER, Node, cluster
from infra.proc import InfraError
from infra.settings import InfraSettings


def is_cluster(settings: InfraSettings) -> bool:
    return settings.local_nodes > 1


def nodes(settings: InfraSettings) -> list[Node]:
    """The local cluster's nodes (Cassandra node i and Kafka node i share address 127.0.0.(10 + i))."""
    return cluster(settings.local_nodes)


def replication_factor(settings: InfraSettings) -> int:
    return min(3, settings.local_nodes)


def client_overrides(settings: InfraSettings) -> dict[str, str]:
    """The client fields of settings that connect to this local cluster (field name -> value)."""
    hosts = [n.host for n in nodes(settings)]
    rf = replication_factor(settings)
    return {
        "kafka_bootstrap_servers": ",".join(f"{h}:{settings.kafka_port}" for h in hosts),
        "kafka_replication_factor": str(rf),
        "kafka_min_insync_replicas": str(max(1, rf - 1)),
        "cassandra_contact_points": ",".join(hosts),
        "cassandra_local_dc": DATACENTER,
        "cassandra_replication": f"{{'class': 'NetworkTopologyStrategy', '{DATACENTER}': {rf}}}",
        "cassandra_consistency": settings.cassandra_consistency,
    }


def client_settings(settings: InfraSettings) -> InfraSettings:
    """``settings`` with the client fields of this local cluster."""
    return settings.replace(**client_overrides(settings))


def client_env(settings: InfraSettings) -> dict[str, str]:
    """The ``VISTA_*`` environment of a client (and of ``vista infra status|down``) of this cluster."""
    server = {
        "local_nodes": str(settings.local_nodes),
        "data_dir": str(settings.data_dir),
        "kafka_port": str(settings.kafka_port),
        "kafka_controller_port": str(settings.kafka_controller_port),
        "cassandra_port": str(settings.cassandra_port),
        "cassandra_storage_port": str(settings.cassandra_storage_port),
    }
    return {f"VISTA_{k.upper()}": v for k, v in {**server, **client_overrides(settings)}.items()}


def env_file(settings: InfraSettings) -> Path:
    return settings.data_dir / "client.env"


def write_client_env(settings: InfraSettings) -> Path:
    """(Re)write ``<data_dir>/client.env``; its path."""
    path = env_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{k}={_quoted(v)}" for k, v in client_env(settings).items()]
    path.write_text("# VISTA_* settings of a client of this local cluster (written by `vista infra up --nodes "
                    f"{settings.local_nodes}`)\n" + "\n".join(lines) + "\n")
    return path


def _quoted(value: str) -> str:
    """A value a shell reads back as it is (``set -a; . client.env``): bare if it can be, else in double quotes
    (the replication map's single quotes stay readable), else shell-quoted."""
    if value == shlex.quote(value):
        return value
    return f'"{value}"' if not any(c in value for c in '"$`\\') else shlex.quote(value)


def check_profile(settings: InfraSettings) -> None:
    """A data dir holds one layout: a single node's files (``kafka/data``) or a cluster's (``kafka/node1``).
    Starting the other one on it would leave the old servers' data behind unseen. Raise InfraError."""
    has_cluster = (settings.kafka_dir / "node1").exists() or (settings.cassandra_dir / "node1").exists()
    has_single = (settings.kafka_dir / "data").exists() or (settings.cassandra_dir / "data").exists()
    if is_cluster(settings) and has_single:
        raise InfraError(f"{settings.data_dir} holds a single-node local stack; the cluster profile needs its own "
                         "data dir (unset VISTA_DATA_DIR to use ~/.cache/vista-stream/cluster)")
    if not is_cluster(settings) and has_cluster:
        raise InfraError(f"{settings.data_dir} holds a local cluster; run it with `vista infra up --nodes 3` "
                         "(VISTA_LOCAL_NODES=3), or use another VISTA_DATA_DIR")


def preflight(settings: InfraSettings) -> None:
    """Raise PortInUseError if a node's ports are taken on its address (by something other than that node)."""
    for node in nodes(settings):
        kafka.preflight(settings, node)
        cassandra.preflight(settings, node)


def in_threads(calls: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Run ``calls`` ({name: fn}) in parallel threads; their results, or one InfraError naming every failure."""
    results: dict[str, Any] = {}
    errors: dict[str, BaseException] = {}

    def run(name: str, fn: Callable[[], Any]) -> None:
        try:
            results[name] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors[name] = exc

    threads = [threading.Thread(target=run, args=item, daemon=True) for item in calls.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise InfraError("\n\n".join(f"[{name}] {exc}" for name, exc in errors.items()))
    return results


def start(settings: InfraSettings) -> dict[str, Any]:
    """Start every node that does not run yet and wait until the cluster is whole: the Kafka brokers together
    (one answers only once a quorum of controllers runs), the Cassandra nodes one after another (a node joins
    the ring of those before it) meanwhile. Returns {"kafka": [...], "cassandra": [...]} (one report per
    node: host, pid, started, seconds) and "ring_seconds" (until every node sees the others)."""
    brokers: dict[str, Any] = {}
    kafka.cluster_id(settings)  # made once, before the brokers' threads format their storage with it

    def start_brokers() -> None:
        brokers.update(in_threads({n.host: (lambda n=n: kafka.start(settings, n)) for n in nodes(settings)}))

    kafka_thread = threading.Thread(target=lambda: _capture(start_brokers, brokers), daemon=True)
    kafka_thread.start()
    cassandras: list[dict[str, Any]] = []
    try:
        for node in nodes(settings):
            cassandras.append({"host": node.host, **cassandra.start(settings, node)})
    finally:
        kafka_thread.join()
    if "error" in brokers:
        raise brokers["error"]
    t0 = time.monotonic()
    client = client_settings(settings)
    wait_whole(client, settings.local_nodes, timeout=settings.startup_timeout_s)
    return {"kafka": [{"host": h, **brokers[h]} for h in sorted(brokers)], "cassandra": cassandras,
            "ring_seconds": time.monotonic() - t0}


def _capture(fn: Callable[[], None], into: dict[str, Any]) -> None:
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - re-raised by start()
        into["error"] = exc


def wait_whole(client: InfraSettings, count: int, timeout: float) -> None:
    """Wait until the driver sees ``count`` Cassandra nodes up and Kafka lists ``count`` brokers."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        up, brokers = cassandra_nodes_up(client), kafka_brokers(client)
        if up == count and brokers == count:
            return
        last = f"{up} Cassandra nodes up, {brokers} Kafka brokers registered"
        time.sleep(1.0)
    raise InfraError(f"the local cluster is not whole after {timeout:.0f}s: {last} (want {count} of each)")


def cassandra_nodes_up(client: InfraSettings) -> int:
    """How many nodes the driver sees up (0 if none answers)."""
    try:
        session = cassandra.connect(client, keyspace=None)
    except Exception:  # noqa: BLE001 - no node answers yet
        return 0
    try:
        return sum(1 for h in session.cluster.metadata.all_hosts() if h.is_up)
    finally:
        session.cluster.shutdown()


def kafka_brokers(client: InfraSettings) -> int:
    """How many brokers the cluster lists (0 if none answers)."""
    try:
        admin = kafka.make_admin(client, request_timeout_ms=5000)
    except Exception:  # noqa: BLE001 - no broker answers yet
        return 0
    try:
        return len(admin.describe_cluster().get("brokers") or [])
    except Exception:  # noqa: BLE001
        return 0
    finally:
        admin.close()


def stop(settings: InfraSettings) -> dict[str, bool]:
    """Stop every node (all at once: a KRaft broker's controlled shutdown needs the controller quorum, which a
    one-by-one stop would take away from the last ones). {"kafka 127.0.0.11": was_running, ...}."""
    calls: dict[str, Callable[[], Any]] = {}
    for node in nodes(settings):
        calls[f"kafka {node.host}"] = lambda n=node: kafka.stop(settings, node=n)
        calls[f"cassandra {node.host}"] = lambda n=node: cassandra.stop(settings, node=n)
    return in_threads(calls)


def status(settings: InfraSettings) -> dict[str, dict[str, Any]]:
    """Per node: its local process (pid, RSS) and whether it answers on its own address."""
    client = client_settings(settings)
    report: dict[str, dict[str, Any]] = {}
    for node in nodes(settings):
        alone = client.replace(kafka_bootstrap_servers=f"{node.host}:{settings.kafka_port}",
                               cassandra_contact_points=node.host)
        report[f"kafka {node.host}"] = kafka.status(alone, node)
        report[f"cassandra {node.host}"] = cassandra.status(alone, node)
    return report


def wipe(settings: InfraSettings) -> None:
    """Delete every node's data, configs and logs and client.env (the nodes must be stopped)."""
    kafka.wipe(settings, tuple(nodes(settings)))
    cassandra.wipe(settings, tuple(nodes(settings)))
    env_file(settings).unlink(missing_ok=True)
