"""Kafka: client configuration from settings, topic creation, and the local KRaft broker.

Client side (works against any cluster)::

    from infra.kafka import make_producer, make_consumer, ensure_topics
    producer = make_producer(settings)                  # kafka-python KafkaProducer
    consumer = make_consumer(settings, "events", group_id="workers")
    ensure_topics(settings)                             # events, events.dlq, score-*

Local server: :func:`start` / :func:`stop` / :func:`status` run a KRaft broker
(broker + controller in one JVM) under ``<data_dir>/kafka`` (one node), or
``<data_dir>/kafka/node<i>`` for node i of the cluster profile (``infra/nodes.py``).
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any

from infra import jars, secured
from infra.nodes import SINGLE, Node
from infra.proc import (InfraError, ServerDirs, check_ports_free, port_open, read_pid, server_status, spawn,
                        start_server, stop_server, wipe_server)
from infra.settings import InfraSettings

if TYPE_CHECKING:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient

CONF = Path(__file__).with_name("conf")
MAIN_CLASS = "kafka.Kafka"
OFFSETS_PARTITIONS = 4


# ---------------------------------------------------------------------------- client config
def client_config(settings: InfraSettings) -> dict[str, Any]:
    """kafka-python keyword arguments shared by producers, consumers and admin clients:
    bootstrap servers plus the SASL/TLS options that are set."""
    cfg: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol.startswith("SASL_"):
        if not settings.kafka_sasl_mechanism:
            raise ValueError("VISTA_KAFKA_SASL_MECHANISM is required with a SASL_* security protocol")
        cfg["sasl_mechanism"] = settings.kafka_sasl_mechanism
        cfg["sasl_plain_username"] = settings.kafka_sasl_username
        cfg["sasl_plain_password"] = (
            settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
        )
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        cfg["ssl_check_hostname"] = settings.kafka_ssl_check_hostname
        if settings.kafka_ssl_cafile:
            cfg["ssl_cafile"] = str(settings.kafka_ssl_cafile)
        if settings.kafka_ssl_certfile:
            cfg["ssl_certfile"] = str(settings.kafka_ssl_certfile)
        if settings.kafka_ssl_keyfile:
            cfg["ssl_keyfile"] = str(settings.kafka_ssl_keyfile)
        if settings.kafka_ssl_password:
            cfg["ssl_password"] = settings.kafka_ssl_password.get_secret_value()
    return cfg


def producer_config(settings: InfraSettings, **overrides: Any) -> dict[str, Any]:
    """KafkaProducer kwargs: durable by default. acks=all: a send succeeds once every in-sync replica has it
    (at least ``min.insync.replicas``). A failed send is retried until ``delivery_timeout_ms`` (2 minutes), which
    outlasts the leader election after a broker dies (a fixed ``retries=5`` gave up within a second)."""
    cfg = client_config(settings)
    cfg.update(acks="all", delivery_timeout_ms=120_000, linger_ms=5)
    cfg.update(overrides)
    return cfg


def consumer_config(settings: InfraSettings, group_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    """KafkaConsumer kwargs: manual commits, start from the earliest offset of a new group.

    kafka-python 2.x refuses network frames above ``receive_message_max_bytes`` (default 1 MB) although a
    fetch may return up to ``fetch_max_bytes`` (default 50 MB): a busy multi-partition fetch then fails
    with "Invalid frame length" and is retried. The frame limit follows the fetch limit instead."""
    cfg = client_config(settings)
    cfg.update(group_id=group_id, enable_auto_commit=False, auto_offset_reset="earliest")
    cfg.update(overrides)
    fetch_max = cfg.get("fetch_max_bytes", 52_428_800)
    cfg.setdefault("receive_message_max_bytes", fetch_max + 1_048_576)
    return cfg


def admin_config(settings: InfraSettings, **overrides: Any) -> dict[str, Any]:
    """KafkaAdminClient kwargs."""
    cfg = client_config(settings)
    cfg.update(overrides)
    return cfg


class KafkaConnectError(InfraError):
    """The bootstrap servers cannot be used with these settings; the message names them and says why
    (refused, TLS handshake, SASL login)."""


def make_producer(settings: InfraSettings, **overrides: Any) -> KafkaProducer:
    from kafka import KafkaProducer

    with _explained(settings):
        return KafkaProducer(**producer_config(settings, **overrides))


def make_consumer(
    settings: InfraSettings, *topics: str, group_id: str | None = None, **overrides: Any
) -> KafkaConsumer:
    from kafka import KafkaConsumer

    with _explained(settings):
        return KafkaConsumer(*topics, **consumer_config(settings, group_id, **overrides))


def make_admin(settings: InfraSettings, **overrides: Any) -> KafkaAdminClient:
    from kafka.admin import KafkaAdminClient

    with _explained(settings):
        return KafkaAdminClient(**admin_config(settings, **overrides))


@contextmanager
def _explained(settings: InfraSettings) -> Iterator[None]:
    """kafka-python only logs why a connection failed: a refused SASL login still yields a producer or
    consumer that retries forever (or an admin client failing with a misleading IncompatibleBrokerVersion),
    and an unreachable cluster a bare NoBrokersAvailable. With TLS or SASL one bounded test connection comes
    first, and a rejected login or certificate raises a KafkaConnectError that says so."""
    from kafka.errors import NoBrokersAvailable

    if settings.kafka_security_protocol != "PLAINTEXT":
        results = _try_connections(settings)
        if not any(ok for _, ok, _ in results) and any(_rejected(err) for _, _, err in results):
            raise KafkaConnectError(_describe(settings, results))
    try:
        yield
    except NoBrokersAvailable as exc:
        raise KafkaConnectError(_describe(settings, _try_connections(settings))) from exc


def connection_problem(settings: InfraSettings, timeout_s: float = 5.0) -> str:
    """Why the bootstrap servers cannot be used with these settings, in one line ("" if one can)."""
    results = _try_connections(settings, timeout_s)
    return "" if any(ok for _, ok, _ in results) else _describe(settings, results)


def _try_connections(settings: InfraSettings, timeout_s: float = 5.0) -> list[tuple[str, bool, BaseException | None]]:
    """A fresh connection (TCP, TLS, SASL login, API versions) to each bootstrap server until one works:
    (server, ok, error) per server tried."""
    from kafka.conn import BrokerConnection

    cfg = {k: v for k, v in client_config(settings).items() if k != "bootstrap_servers"}
    results = []
    for host, port in _host_ports(settings.bootstrap_servers):
        errors: list[BaseException] = []
        conn = BrokerConnection(host, port, socket.AF_UNSPEC, **cfg)
        close = conn.close

        def record(error: BaseException | None = None, _close: Any = close, _errors: list = errors) -> None:
            if error is not None:
                _errors.append(error)
            _close(error)

        conn.close = record  # type: ignore[method-assign] - the only place kafka-python passes the cause
        try:
            ok = conn.connect_blocking(timeout_s)
        except Exception as exc:  # noqa: BLE001 - e.g. ssl.SSLCertVerificationError: the answer itself
            ok = False
            errors.append(exc)
        finally:
            close()
        # a refused login is followed by a generic "connection failure": the refusal is the cause
        cause = next((e for e in errors if _rejected(e)), errors[-1] if errors else None)
        results.append((f"{host}:{port}", ok, cause))
        if ok:
            break
    return results


def _rejected(error: BaseException | None) -> bool:
    """A refused login or certificate: retrying with the same settings cannot help."""
    from kafka.errors import IllegalSaslStateError, SaslAuthenticationFailedError, UnsupportedSaslMechanismError

    return isinstance(error, (SaslAuthenticationFailedError, UnsupportedSaslMechanismError, IllegalSaslStateError,
                              ssl.SSLError))


def _describe(settings: InfraSettings, results: list[tuple[str, bool, BaseException | None]]) -> str:
    protocol = settings.kafka_security_protocol
    how = protocol
    if protocol.startswith("SASL_"):
        how += f", {settings.kafka_sasl_mechanism} login of user {settings.kafka_sasl_username!r}"
    if protocol in ("SSL", "SASL_SSL"):
        how += f", CA file {settings.kafka_ssl_cafile or '(system default)'}"
    parts = []
    for server, ok, err in results:
        if ok:
            parts.append(f"{server} accepts a connection now")
        elif err is None:
            parts.append(f"{server} did not finish a connection (is it a {protocol} listener?)")
        else:
            what = ("TLS handshake failed" if isinstance(err, ssl.SSLError)
                    else "login rejected" if _rejected(err) else "connection failed")
            parts.append(f"{server} {what}: {type(err).__name__}: {err}")
    return f"Kafka at {','.join(settings.bootstrap_servers)} cannot be used ({how}): " + "; ".join(parts)


def ensure_topics(
    settings: InfraSettings, topics: dict[str, int] | None = None, *, replication_factor: int | None = None
) -> list[str]:
    """Create the missing topics of ``topics`` ({name: partitions}; default: every vista topic).

    New topics get ``replication_factor`` (default: the setting) and ``min.insync.replicas`` (the setting, else
    replication factor - 1, at least 1). Existing topics are left alone (a partition-count mismatch is logged,
    not changed). Returns the names that were created.
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    topics = settings.topic_partitions if topics is None else topics
    rf = replication_factor or settings.kafka_replication_factor
    min_isr = min(rf, settings.kafka_min_insync_replicas or max(1, rf - 1))
    configs = {"min.insync.replicas": str(min_isr)}
    admin = make_admin(settings)
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(name, n, rf, topic_configs=configs) for name, n in topics.items() if name not in existing]
        created: list[str] = []
        if missing:
            try:
                admin.create_topics(missing, timeout_ms=30_000)
                created = [t.name for t in missing]
            except TopicAlreadyExistsError:  # a concurrent init won the race
                created = []
        already = [n for n in topics if n in existing]
        for meta in admin.describe_topics(already) if already else []:
            name = _topic_name(meta)
            want, have = topics[name], len(meta.get("partitions") or [])
            if have != want:
                logging.getLogger(__name__).warning(
                    "topic %s has %d partitions, settings ask for %d (left unchanged)", name, have, want
                )
        _wait_topics_ready(admin, list(topics))
        return created
    finally:
        admin.close()


def describe_topics(settings: InfraSettings, names: list[str]) -> dict[str, dict[str, int | None]]:
    """Partitions, replication factor and ``min.insync.replicas`` of existing topics (what an operator checks
    after ``vista infra init`` on a cluster that may have held the topics before)."""
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = make_admin(settings)
    try:
        out: dict[str, dict[str, int | None]] = {}
        for meta in admin.describe_topics(names):
            parts = meta.get("partitions") or []
            out[_topic_name(meta)] = {"partitions": len(parts),
                                      "replication_factor": len(parts[0]["replicas"]) if parts else None,
                                      "min_insync_replicas": None}
        resources = [ConfigResource(ConfigResourceType.TOPIC, n, configs={"min.insync.replicas": None}) for n in out]
        for response in admin.describe_configs(resources) if resources else []:
            for _err, _msg, _type, name, entries, *_ in response.resources:
                for entry in entries:
                    if entry[0] == "min.insync.replicas" and name in out:
                        out[name]["min_insync_replicas"] = int(entry[1])
        return out
    finally:
        admin.close()


def _wait_topics_ready(admin: KafkaAdminClient, names: list[str], timeout: float = 30.0) -> None:
    """Wait until every partition of ``names`` has a leader."""
    deadline = time.monotonic() + timeout
    while True:
        metas = admin.describe_topics(names)
        if len(metas) == len(names) and all(
            m.get("error_code", 0) == 0 and m.get("partitions") and all(_leader(p) >= 0 for p in m["partitions"])
            for m in metas
        ):
            return
        if time.monotonic() > deadline:
            raise InfraError(f"topics {names} have no leader after {timeout:.0f}s")
        time.sleep(0.2)


# kafka-python 2.x and 3.x name these fields differently.
def _topic_name(meta: dict[str, Any]) -> str:
    return meta.get("name") or meta["topic"]


def _leader(partition: dict[str, Any]) -> int:
    return partition.get("leader_id", partition.get("leader", -1))


def metadata_ok(settings: InfraSettings, timeout_ms: int = 3000) -> tuple[bool, str]:
    """Does the cluster answer a metadata request? Returns (ok, error text)."""
    from kafka import KafkaAdminClient

    if not any(port_open(port, host) for host, port in _host_ports(settings.bootstrap_servers)):
        return False, f"no broker accepts connections at {','.join(settings.bootstrap_servers)}"
    try:
        admin = KafkaAdminClient(
            **client_config(settings), request_timeout_ms=timeout_ms, api_version_auto_timeout_ms=timeout_ms
        )
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return False, f"{type(exc).__name__}: {exc}"
    try:
        admin.describe_cluster()
        return True, ""
    except Exception as exc:  # noqa: BLE001
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        admin.close()


def _host_ports(servers: list[str]) -> list[tuple[str, int]]:
    out = []
    for s in servers:
        host, _, port = s.rpartition(":")
        out.append((host.strip("[]") or "127.0.0.1", int(port or 9092)))
    return out


# ---------------------------------------------------------------------------- local broker
def paths(settings: InfraSettings, node: Node = SINGLE) -> ServerDirs:
    return ServerDirs(settings.kafka_dir / node.folder, "kafka", "server.log")


def running_pid(settings: InfraSettings, node: Node = SINGLE) -> int | None:
    """Pid of the local broker of these settings, if it runs."""
    p = paths(settings, node)
    return read_pid(p.pid_file, str(p.conf))


def _write_config(settings: InfraSettings, p: ServerDirs, node: Node) -> None:
    for d in (p.data, p.logs, p.conf):
        d.mkdir(parents=True, exist_ok=True)
    replication = min(3, len(node.peers))
    server = Template((CONF / "kafka-server.properties").read_text()).substitute(
        node_id=node.index,
        voters=",".join(f"{i}@{h}:{settings.kafka_controller_port}" for i, h in enumerate(node.peers, start=1)),
        host=node.host,
        replication=replication,
        min_isr=max(1, replication - 1),
        port=settings.kafka_port,
        controller_port=settings.kafka_controller_port,
        listener="SASL_SSL" if secured.is_secured(settings) else "PLAINTEXT",
        log_dirs=p.data,
        offsets_partitions=OFFSETS_PARTITIONS,
        auto_create_topics="false",
    )
    if secured.is_secured(settings):
        material = secured.load(settings)
        server += Template((CONF / "kafka-secured.properties").read_text()).substitute(
            mechanism=secured.KAFKA_MECHANISM,
            mechanism_lower=secured.KAFKA_MECHANISM.lower(),
            username=secured.KAFKA_USER,
            password=material.credentials.kafka_password,
            keystore=material.certs.server,
            truststore=material.certs.ca,
        )
    (p.conf / "server.properties").write_text(server)
    (p.conf / "server.properties").chmod(0o600)  # the secured profile's broker login is in it
    log4j = Template((CONF / "kafka-log4j2.properties").read_text()).substitute(log_dir=p.logs)
    (p.conf / "log4j2.properties").write_text(log4j)


def _java_cmd(settings: InfraSettings, p: ServerDirs, main: list[str], heap_mb: int) -> list[str]:
    return [
        settings.java,
        f"-Xms{min(256, heap_mb)}m",
        f"-Xmx{heap_mb}m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={p.conf / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={p.logs}",
        "-cp",
        jars.classpath(settings, "kafka"),
        *main,
    ]


def cluster_id(settings: InfraSettings) -> str:
    """The KRaft cluster id every node of this data dir is formatted with (made once, kept in a file)."""
    path = settings.kafka_dir / "cluster.id"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=") + "\n")
    return path.read_text().strip()


def _format_storage(settings: InfraSettings, p: ServerDirs, node: Node) -> None:
    """First start only: format the KRaft metadata/log dir (every node of a cluster with the same id)."""
    if (p.data / "meta.properties").exists():
        return
    import subprocess

    kraft_id = (cluster_id(settings) if node.clustered
                else base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
    cmd = _java_cmd(
        settings,
        p,
        ["kafka.tools.StorageTool", "format", "-t", kraft_id, "-c", str(p.conf / "server.properties"),
         *_scram_users(settings)],
        256,
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=p.root)
    if proc.returncode != 0:
        raise InfraError(f"formatting Kafka storage failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")


def _scram_users(settings: InfraSettings) -> list[str]:
    """``--add-scram`` arguments of the format step: the secured profile's SCRAM user, bootstrapped into the
    metadata log (KRaft has no ZooKeeper to hold it, and the broker needs it for its own inter-broker login)."""
    if not secured.is_secured(settings):
        return []
    password = secured.load(settings).credentials.kafka_password
    return ["--add-scram", f"{secured.KAFKA_MECHANISM}=[name={secured.KAFKA_USER},password={password}]"]


def preflight(settings: InfraSettings, node: Node = SINGLE) -> None:
    """Raise PortInUseError if the local Kafka is not running and one of its ports is taken."""
    if running_pid(settings, node) is None:
        check_ports_free(
            {"kafka": settings.kafka_port, "kafka controller": settings.kafka_controller_port},
            "Kafka",
            {"kafka": "VISTA_KAFKA_PORT", "kafka controller": "VISTA_KAFKA_CONTROLLER_PORT"},
            host=node.host,
        )


def start(settings: InfraSettings, node: Node = SINGLE) -> dict[str, Any]:
    """Start the local broker unless it already runs; wait until it answers metadata requests (a node of a
    cluster answers once a quorum of its controllers runs: start the others meanwhile).

    Returns {"pid", "started" (bool), "seconds"}.
    """
    p = paths(settings, node)

    def launch() -> int:
        jars.fetch(settings, "kafka")
        preflight(settings, node)
        _write_config(settings, p, node)
        _format_storage(settings, p, node)
        cmd = _java_cmd(settings, p, [MAIN_CLASS, str(p.conf / "server.properties")], settings.kafka_heap_mb)
        return spawn(cmd, cwd=p.root, out_file=p.out_file, pid_file=p.pid_file, env=_env())

    if secured.is_secured(settings):
        local = secured.client_settings(settings)
    else:
        local = settings.replace(kafka_bootstrap_servers=f"{node.host}:{settings.kafka_port}",
                                 kafka_security_protocol="PLAINTEXT")
    return start_server(name=f"Kafka {node.host}", pid=running_pid(settings, node), launch=launch,
                        port=settings.kafka_port, probe=lambda: metadata_ok(local), dirs=p,
                        timeout=settings.startup_timeout_s, host=node.host)


def stop(settings: InfraSettings, timeout: float = 60.0, node: Node = SINGLE) -> bool:
    """Stop the local broker (SIGTERM, wait; SIGKILL after ``timeout``). True if one was running."""
    return stop_server(running_pid(settings, node), paths(settings, node), f"Kafka {node.host}", timeout)


def status(settings: InfraSettings, node: Node = SINGLE) -> dict[str, Any]:
    """Health of Kafka: the local process (if any) and whether the cluster answers."""
    ok, err = metadata_ok(settings)
    if not ok and any(port_open(port, host) for host, port in _host_ports(settings.bootstrap_servers)):
        err = connection_problem(settings) or err  # e.g. a refused login, not a bare NoBrokersAvailable
    return server_status("kafka", running_pid(settings, node), (ok, err),
                         bootstrap_servers=settings.bootstrap_servers)


def wipe(settings: InfraSettings, nodes: tuple[Node, ...] = (SINGLE,)) -> None:
    """Delete the local brokers' state (they must be stopped)."""
    for node in nodes:
        wipe_server(running_pid(settings, node), paths(settings, node), f"Kafka {node.host}")
    if any(node.clustered for node in nodes):
        wipe_server(None, ServerDirs(settings.kafka_dir, "kafka", "server.log"), "Kafka")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CLASSPATH", None)
    env.pop("JAVA_TOOL_OPTIONS", None)
    return env
