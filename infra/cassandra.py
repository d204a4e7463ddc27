"""Cassandra: driver sessions from settings, the vista schema, and the local single node.

Client side (works against any cluster)::

    from infra.cassandra import connect
    session = connect(settings)            # keyspace set, default consistency from settings
    ...
    session.cluster.shutdown()

Local server: :func:`start` / :func:`stop` / :func:`status` run Cassandra 5.0
(``org.apache.cassandra.service.CassandraDaemon``) from the cached jars with a
generated minimal ``cassandra.yaml`` under ``<data_dir>/cassandra`` (one node), or
``<data_dir>/cassandra/node<i>`` for node i of the cluster profile (``infra/nodes.py``).
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any

from infra import jars, secured
from infra.nodes import DATACENTER, RACK, SINGLE, Node
from infra.proc import (InfraError, ServerDirs, check_ports_free, port_open, read_pid, server_status, spawn,
                        start_server, stop_server, wipe_server)
from infra.settings import InfraSettings

if TYPE_CHECKING:
    from cassandra.cluster import Cluster, Session

CONF = Path(__file__).with_name("conf")
CQL_DIR = Path(__file__).with_name("cql")
MAIN_CLASS = "org.apache.cassandra.service.CassandraDaemon"

# conf/jvm17-server.options of Cassandra 5.0: module access CassandraDaemon needs on Java 17.
JAVA17_FLAGS = [
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports", "java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports", "java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports", "java.sql/java.sql=ALL-UNNAMED",
    "--add-exports", "java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports", "jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports", "jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports", "jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens", "jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens", "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens", "java.base/java.io=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens", "jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang=ALL-UNNAMED",
    "--add-opens", "java.base/java.util=ALL-UNNAMED",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
]  # fmt: skip

GC_FLAGS = [
    "-XX:+UseG1GC",
    "-XX:+ParallelRefProcEnabled",
    "-XX:MaxTenuringThreshold=1",
    "-XX:G1HeapRegionSize=16m",
    "-XX:G1RSetUpdatingPauseTimePercent=5",
    "-XX:MaxGCPauseMillis=300",
    "-XX:InitiatingHeapOccupancyPercent=70",
    "-Xss256k",
    "-XX:StringTableSize=1000003",
    "-XX:+PerfDisableSharedMem",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.net.preferIPv4Stack=true",
]

# A lone seed node has nobody to gossip with: skip the waits meant for real rings.
FAST_START_FLAGS = [
    "-Dcassandra.skip_wait_for_gossip_to_settle=0",
    "-Dcassandra.superuser_setup_delay_ms=0",
    "-Dcassandra.shutdown_announce_in_ms=0",
    "-Dcassandra-foreground=yes",
]


# ---------------------------------------------------------------------------- driver side
def _auth_provider(settings: InfraSettings) -> Any:
    if not settings.cassandra_username:
        return None
    from cassandra.auth import PlainTextAuthProvider

    password = settings.cassandra_password.get_secret_value() if settings.cassandra_password else ""
    return PlainTextAuthProvider(username=settings.cassandra_username, password=password)


def make_cluster(settings: InfraSettings, **overrides: Any) -> Cluster:
    """A driver ``Cluster`` for these settings (contact points, port, auth, TLS, consistency)."""
    from cassandra import ConsistencyLevel
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=settings.cassandra_local_dc)),
        consistency_level=ConsistencyLevel.name_to_value[settings.cassandra_consistency],
        request_timeout=settings.cassandra_request_timeout_s,
    )
    kwargs: dict[str, Any] = dict(
        contact_points=settings.cassandra_hosts,
        port=settings.cassandra_port,
        auth_provider=_auth_provider(settings),
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=10,
    )
    if settings.cassandra_protocol_version is not None:
        kwargs["protocol_version"] = settings.cassandra_protocol_version
    if settings.cassandra_ssl_cafile:
        ctx = ssl.create_default_context(cafile=str(settings.cassandra_ssl_cafile))
        kwargs["ssl_context"] = ctx
    kwargs.update(overrides)
    return Cluster(**kwargs)


def connect(settings: InfraSettings, *, keyspace: str | None | bool = True, **cluster_overrides: Any) -> Session:
    """Open a driver session. ``keyspace=True`` uses ``settings.cassandra_keyspace``, a string
    uses that keyspace, None/False none. Close with ``session.cluster.shutdown()``."""
    cluster = make_cluster(settings, **cluster_overrides)
    ks = settings.cassandra_keyspace if keyspace is True else (keyspace or None)
    try:
        return cluster.connect(ks)
    except Exception:
        cluster.shutdown()
        raise


def cql_ok(settings: InfraSettings, timeout: float = 5.0) -> tuple[bool, str]:
    """Does Cassandra answer a CQL query? Returns (ok, error text)."""
    hosts = [(h, settings.cassandra_port) for h in settings.cassandra_hosts]
    if not any(port_open(port, host) for host, port in hosts):
        return False, f"no node accepts connections at {','.join(settings.cassandra_hosts)}:{settings.cassandra_port}"
    try:
        session = connect(settings, keyspace=None, connect_timeout=timeout, control_connection_timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return False, _short_error(exc)
    try:
        session.execute("SELECT release_version FROM system.local", timeout=timeout)
        return True, ""
    except Exception as exc:  # noqa: BLE001
        return False, _short_error(exc)
    finally:
        session.cluster.shutdown()


def _short_error(exc: BaseException) -> str:
    errors = getattr(exc, "errors", None)
    if isinstance(errors, dict) and errors:
        return f"{type(exc).__name__}: " + "; ".join(f"{h}: {e}" for h, e in errors.items())
    return f"{type(exc).__name__}: {exc}"


def schema_statements(settings: InfraSettings) -> list[str]:
    """The CQL statements of ``infra/cql/*.cql`` (sorted by file name) for these settings."""
    values = {"keyspace": settings.cassandra_keyspace, "replication": settings.cassandra_replication}
    statements: list[str] = []
    for path in sorted(CQL_DIR.glob("*.cql")):
        text = Template(path.read_text()).substitute(values)
        text = re.sub(r"--[^\n]*", "", text)
        statements.extend(s.strip() for s in text.split(";") if s.strip())
    return statements


def apply_schema(settings: InfraSettings, session: Session | None = None) -> int:
    """Create the keyspace and tables if missing (every statement is IF NOT EXISTS).
    Returns the number of statements run."""
    own = session is None
    session = session or connect(settings, keyspace=None)
    try:
        statements = schema_statements(settings)
        for stmt in statements:
            session.execute(stmt, timeout=60)
        if not session.cluster.control_connection.wait_for_schema_agreement(wait_time=30):
            raise InfraError("Cassandra nodes did not agree on the schema within 30s")
        return len(statements)
    finally:
        if own:
            session.cluster.shutdown()


def keyspace_replication(settings: InfraSettings) -> dict[str, str] | None:
    """The replication map of the vista keyspace as the cluster has it (None if there is no keyspace)."""
    session = connect(settings, keyspace=None)
    try:
        row = session.execute("SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s",
                              (settings.cassandra_keyspace,), timeout=30).one()
        return dict(row.replication) if row else None
    finally:
        session.cluster.shutdown()


# ---------------------------------------------------------------------------- local node
def paths(settings: InfraSettings, node: Node = SINGLE) -> ServerDirs:
    return ServerDirs(settings.cassandra_dir / node.folder, "cassandra", "system.log")


def running_pid(settings: InfraSettings, node: Node = SINGLE) -> int | None:
    """Pid of the local node of these settings, if it runs."""
    p = paths(settings, node)
    return read_pid(p.pid_file, str(p.conf))


def _write_config(settings: InfraSettings, p: ServerDirs, node: Node) -> None:
    for d in (p.conf, p.logs, p.root / "data", p.root / "commitlog", p.root / "triggers"):
        d.mkdir(parents=True, exist_ok=True)
    authenticator = "PasswordAuthenticator" if secured.is_secured(settings) else settings.cassandra_authenticator
    authorizer = "CassandraAuthorizer" if authenticator == "PasswordAuthenticator" else "AllowAllAuthorizer"
    yaml = Template((CONF / "cassandra.yaml").read_text()).substitute(
        cluster_name="vista-cluster" if node.clustered else "vista-local",
        initial_token=node.initial_token(),
        snitch="GossipingPropertyFileSnitch" if node.clustered else "SimpleSnitch",
        seeds=",".join(f"{h}:{settings.cassandra_storage_port}" for h in node.peers),
        host=node.host,
        hints="true" if node.clustered else "false",
        storage_port=settings.cassandra_storage_port,
        native_port=settings.cassandra_port,
        authenticator=authenticator,
        authorizer=authorizer,
        data_dir=p.root,
    )
    (p.conf / "cassandra-rackdc.properties").write_text(f"dc={DATACENTER}\nrack={RACK}\n")
    if secured.is_secured(settings):
        yaml += Template((CONF / "cassandra-secured.yaml").read_text()).substitute(
            keystore=secured.load(settings).certs.server
        )
    (p.conf / "cassandra.yaml").write_text(yaml)
    logback = Template((CONF / "cassandra-logback.xml").read_text()).substitute(log_dir=p.logs)
    (p.conf / "logback.xml").write_text(logback)


def java_command(settings: InfraSettings, node: Node = SINGLE) -> list[str]:
    """The full ``java`` command line of the local node."""
    p = paths(settings, node)
    heap = settings.cassandra_heap_mb
    return [
        settings.java,
        f"-Xms{min(512, heap)}m",
        f"-Xmx{heap}m",
        *GC_FLAGS,
        *JAVA17_FLAGS,
        f"-javaagent:{jars.find_jar(settings, 'cassandra', 'jamm-')}",
        f"-XX:HeapDumpPath={p.logs}",
        f"-Dcassandra.config=file://{p.conf / 'cassandra.yaml'}",
        f"-Dlogback.configurationFile={p.conf / 'logback.xml'}",
        f"-Dcassandra-rackdc.properties=file://{p.conf / 'cassandra-rackdc.properties'}",
        f"-Dcassandra.logdir={p.logs}",
        f"-Dcassandra.storagedir={p.root}",
        f"-Dcassandra.triggers_dir={p.root / 'triggers'}",
        *FAST_START_FLAGS,
        "-cp",
        jars.classpath(settings, "cassandra"),
        MAIN_CLASS,
    ]


def preflight(settings: InfraSettings, node: Node = SINGLE) -> None:
    """Raise PortInUseError if the local Cassandra is not running and one of its ports is taken."""
    if running_pid(settings, node) is None:
        check_ports_free(
            {"cassandra native": settings.cassandra_port, "cassandra storage": settings.cassandra_storage_port},
            "Cassandra",
            {"cassandra native": "VISTA_CASSANDRA_PORT", "cassandra storage": "VISTA_CASSANDRA_STORAGE_PORT"},
            host=node.host,
        )


def start(settings: InfraSettings, node: Node = SINGLE) -> dict[str, Any]:
    """Start the local node unless it already runs; wait until it answers a CQL query.

    Returns {"pid", "started" (bool), "seconds"}.
    """
    p = paths(settings, node)

    def launch() -> int:
        jars.fetch(settings, "cassandra")
        preflight(settings, node)
        _write_config(settings, p, node)
        return spawn(java_command(settings, node), cwd=p.root, out_file=p.out_file, pid_file=p.pid_file)

    if secured.is_secured(settings):
        return _start_secured(settings, launch)
    local = settings.replace(cassandra_contact_points=node.host, cassandra_ssl_cafile=None, cassandra_local_dc=None)
    return start_server(name=f"Cassandra {node.host}", pid=running_pid(settings, node), launch=launch,
                        port=settings.cassandra_port, probe=lambda: cql_ok(local), dirs=p,
                        timeout=settings.startup_timeout_s, interval=0.5, host=node.host)


def _start_secured(settings: InfraSettings, launch: Any) -> dict[str, Any]:
    """Start a secured node and, on its first start, provision its roles. Until then only the default
    superuser (cassandra/cassandra, created a moment after startup) can log in, so it is the probe's login."""
    material = secured.load(settings)
    marker = settings.cassandra_dir / "roles-provisioned"  # wiped with the node's data
    admin_password = (material.credentials.cassandra_admin_password if marker.exists()
                      else secured.CASSANDRA_DEFAULT_PASSWORD)
    admin = secured.admin_settings(settings, admin_password)
    report = start_server(name="Cassandra", pid=running_pid(settings), launch=launch, port=settings.cassandra_port,
                          probe=lambda: cql_ok(admin), dirs=paths(settings), timeout=settings.startup_timeout_s,
                          interval=0.5)
    if not marker.exists():
        _provision_roles(admin, material.credentials)
        marker.touch()
    ok, err = cql_ok(secured.client_settings(settings, material))
    if not ok:
        raise InfraError(f"the secured Cassandra does not accept the application login: {err}")
    return report


def _provision_roles(admin: InfraSettings, creds: secured.Credentials) -> None:
    """Create the application role (all permissions on every keyspace: it creates the vista schema) and
    replace the default superuser's well-known password."""
    session = connect(admin, keyspace=None)
    try:
        session.execute(
            f"CREATE ROLE IF NOT EXISTS {secured.CASSANDRA_USER} WITH PASSWORD = %s AND LOGIN = true",
            (creds.cassandra_password,), timeout=30,
        )
        session.execute(f"GRANT ALL PERMISSIONS ON ALL KEYSPACES TO {secured.CASSANDRA_USER}", timeout=30)
        session.execute(f"ALTER ROLE {secured.CASSANDRA_SUPERUSER} WITH PASSWORD = %s",
                        (creds.cassandra_admin_password,), timeout=30)
    finally:
        session.cluster.shutdown()


def stop(settings: InfraSettings, timeout: float = 90.0, node: Node = SINGLE) -> bool:
    """Stop the local node (SIGTERM runs Cassandra's drain hook; SIGKILL after ``timeout``).
    True if one was running."""
    return stop_server(running_pid(settings, node), paths(settings, node), f"Cassandra {node.host}", timeout)


def status(settings: InfraSettings, node: Node = SINGLE) -> dict[str, Any]:
    """Health of Cassandra: the local process (if any) and whether it answers CQL."""
    return server_status("cassandra", running_pid(settings, node), cql_ok(settings),
                         contact_points=settings.cassandra_hosts, port=settings.cassandra_port)


def wipe(settings: InfraSettings, nodes: tuple[Node, ...] = (SINGLE,)) -> None:
    """Delete the local nodes' state (they must be stopped)."""
    for node in nodes:
        wipe_server(running_pid(settings, node), paths(settings, node), f"Cassandra {node.host}")
    if any(node.clustered for node in nodes):
        wipe_server(None, ServerDirs(settings.cassandra_dir, "cassandra", "system.log"), "Cassandra")
