"""`vista infra ...`: fetch, start, stop, inspect and initialize the local Kafka + Cassandra.

Settings come from `VISTA_*` environment variables (see infra/settings.py).
"""

from __future__ import annotations

import json

import typer

infra_app = typer.Typer(
    name="infra",
    help="Local Kafka (KRaft) and Cassandra 5: fetch jars, up, down, status, reset, init.",
    no_args_is_help=True,
)


SECURED_HELP = ("The secured profile (same as VISTA_SECURITY_PROFILE=secured): Kafka SASL_SSL/SCRAM, Cassandra "
                "password auth + TLS, data under ~/.cache/vista-stream/secured unless VISTA_DATA_DIR is set.")


NODES_HELP = ("3: the local cluster profile (same as VISTA_LOCAL_NODES=3): three Cassandra nodes and three Kafka "
              "brokers on 127.0.0.11-13, RF 3, LOCAL_QUORUM, data under ~/.cache/vista-stream/cluster unless "
              "VISTA_DATA_DIR is set. Default: VISTA_LOCAL_NODES, else 1 (the single-node stack).")


def _settings(secured: bool = False, nodes: int | None = None):  # noqa: ANN202 - import kept out of `vista --help`
    from pydantic import ValidationError

    from infra.settings import InfraSettings

    changes: dict[str, object] = {}
    if secured:
        changes["security_profile"] = "secured"
    if nodes is not None:
        changes["local_nodes"] = nodes
    try:
        return InfraSettings(**changes)
    except ValidationError as exc:
        _fail(ValueError("; ".join(e["msg"] for e in exc.errors())))


def _nodes_option() -> typer.models.OptionInfo:
    return typer.Option(None, "--nodes", min=1, max=3, help=NODES_HELP)


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1)


@infra_app.command()
def fetch(force: bool = typer.Option(False, "--force", help="Download again even if cached.")) -> None:
    """Download the Kafka and Cassandra jars from Maven Central into the jar cache (once)."""
    from infra import local
    from infra.jars import FetchError

    settings = _settings()
    try:
        spent = local.fetch(settings, force=force)
    except FetchError as exc:
        _fail(exc)
    for name, seconds in spent.items():
        state = "cached" if seconds == 0.0 else f"downloaded in {seconds:.1f}s"
        typer.echo(f"{name:<9} {state}  ({settings.jar_cache_dir / name})")


@infra_app.command()
def up(
    init: bool = typer.Option(True, "--init/--no-init", help="Create keyspace, tables and topics."),
    secured: bool = typer.Option(False, "--secured", help=SECURED_HELP),
    nodes: int | None = _nodes_option(),
) -> None:
    """Start Kafka and Cassandra (no-op if running), wait until ready, create schema and topics."""
    from infra import local
    from infra.jars import FetchError
    from infra.proc import InfraError

    settings = _settings(secured, nodes)
    try:
        report = local.up(settings, init=init)
    except (InfraError, FetchError) as exc:
        _fail(exc)
    for name, seconds in report["fetch"].items():
        if seconds:
            typer.echo(f"fetch     {name} jars downloaded in {seconds:.1f}s")
    for name in ("kafka", "cassandra"):
        for r in report[name] if isinstance(report[name], list) else [report[name]]:
            verb = "started" if r["started"] else "already running"
            where = f" {r['host']}" if "host" in r else ""
            typer.echo(f"{name:<9} {verb}{where} (pid {r['pid']}), ready after {r['seconds']:.1f}s")
    if "ring_seconds" in report:
        typer.echo(f"cluster   every node sees the others after {report['ring_seconds']:.1f}s more")
    if init:
        i = report["init"]
        created = ", ".join(i["topics_created"]) or "none new"
        typer.echo(
            f"init      schema ({i['cql_statements']} statements) {i['schema_seconds']:.1f}s, "
            f"topics ({created}) {i['topics_seconds']:.1f}s"
        )
    typer.echo(f"total     {report['total_seconds']:.1f}s  (data: {settings.data_dir})")
    if "client_env" in report:
        what = "login, CA file and ports" if secured else "contact points, bootstrap servers, replication"
        typer.echo(f"clients   set -a; . {report['client_env']}; set +a   (VISTA_* {what})")


@infra_app.command()
def down(secured: bool = typer.Option(False, "--secured", help=SECURED_HELP),
         nodes: int | None = _nodes_option()) -> None:
    """Stop the local Kafka and Cassandra (by pid) and wait until they exit."""
    from infra import local
    from infra.proc import InfraError

    try:
        stopped = local.down(_settings(secured, nodes))
    except InfraError as exc:
        _fail(exc)
    for name, was_running in stopped.items():
        typer.echo(f"{name:<9} {'stopped' if was_running else 'not running'}")


@infra_app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    secured: bool = typer.Option(False, "--secured", help=SECURED_HELP + " Probes with the generated login."),
    nodes: int | None = _nodes_option(),
) -> None:
    """Health of Kafka and Cassandra (each node of a cluster); exit code 1 unless all answer."""
    from infra import local, secured as secured_profile
    from infra.proc import InfraError

    settings = _settings(secured, nodes)
    if secured:
        try:
            settings = secured_profile.client_settings(settings)
        except InfraError as exc:
            _fail(exc)
    report = local.status(settings)
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        for name, r in report.items():
            where = ",".join(r.get("bootstrap_servers") or []) or (
                ",".join(r.get("contact_points") or []) + f":{r.get('port')}"
            )
            proc = f"local pid {r['pid']}, rss {r['rss_mb']:.0f} MiB" if r["pid"] else "no local process"
            health = "ready" if r["ready"] else f"DOWN ({r['error']})"
            typer.echo(f"{name:<9} {health:<8} {where}  [{proc}]" if " " not in name
                       else f"{name:<21} {health:<8} [{proc}]")
    if not all(r["ready"] for r in report.values()):
        raise typer.Exit(1)


@infra_app.command()
def reset(
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    secured: bool = typer.Option(False, "--secured", help=SECURED_HELP),
    nodes: int | None = _nodes_option(),
) -> None:
    """Stop both servers and wipe their data (the jar cache is kept)."""
    from infra import local
    from infra.proc import InfraError

    settings = _settings(secured, nodes)
    if not yes:
        typer.confirm(f"Delete all local Kafka and Cassandra data under {settings.data_dir}?", abort=True)
    try:
        local.reset(settings)
    except InfraError as exc:
        _fail(exc)
    typer.echo(f"stopped and wiped {settings.kafka_dir} and {settings.cassandra_dir}"
               + (" and the secured profile's certificates and passwords" if settings.security_profile == "secured"
                  else ""))


@infra_app.command()
def init(
    replication: str | None = typer.Option(
        None, "--replication", help="CQL replication map of the keyspace, e.g. \"{'class': "
        "'NetworkTopologyStrategy', 'dc1': 3}\" (default: VISTA_CASSANDRA_REPLICATION). An existing keyspace keeps "
        "its own; the command prints it."),
    replication_factor: int | None = typer.Option(
        None, "--replication-factor", min=1,
        help="Replication factor of the topics it creates (default: VISTA_KAFKA_REPLICATION_FACTOR)."),
    min_insync_replicas: int | None = typer.Option(
        None, "--min-insync-replicas", min=1,
        help="min.insync.replicas of the topics it creates (default: VISTA_KAFKA_MIN_INSYNC_REPLICAS, else the "
             "replication factor - 1, at least 1)."),
    nodes: int | None = _nodes_option(),
) -> None:
    """Create keyspace, tables and topics if missing, on servers that already run (the local stack, the local
    cluster with --nodes 3, or your own cluster from VISTA_* settings). Never starts a server."""
    from infra import cluster, local

    settings = _settings(nodes=nodes)
    if cluster.is_cluster(settings):
        settings = cluster.client_settings(settings)
    changes = {k: v for k, v in {"cassandra_replication": replication, "kafka_replication_factor": replication_factor,
                                 "kafka_min_insync_replicas": min_insync_replicas}.items() if v is not None}
    try:
        settings = settings.replace(**changes)
        r = local.init_schema_and_topics(settings)
    except Exception as exc:  # noqa: BLE001 - driver/broker/validation errors vary; show them plainly
        _fail(exc)
    created = ", ".join(r["topics_created"]) or "none new"
    typer.echo(f"schema: {r['cql_statements']} statements applied; topics created: {created}")
    typer.echo(f"keyspace {settings.cassandra_keyspace}: replication {r['keyspace_replication']}")
    for name, t in r["topics"].items():
        typer.echo(f"topic {name}: {t['partitions']} partitions, replication factor {t['replication_factor']}, "
                   f"min.insync.replicas {t['min_insync_replicas']}")


def register(app: typer.Typer) -> None:
    """Attach the `infra` command group to the root app."""
    app.add_typer(infra_app, name="infra")
