"""`vista versions list | status | promote | drop`: the model-version lifecycle (stream/versions.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer

versions_app = typer.Typer(help="Model versions: backfilling -> live -> (promoted: served) -> retired.",
                           no_args_is_help=True)


@contextmanager
def _registry() -> Iterator[tuple[Any, Any, Any]]:
    """(settings, session, VersionStore); the session is closed on exit."""
    from infra.cassandra import connect
    from infra.settings import load_settings
    from stream.versions import VersionStore

    settings = load_settings()
    session = connect(settings)
    try:
        yield settings, session, VersionStore(session, settings.cassandra_keyspace)
    finally:
        session.cluster.shutdown()


def _fail(exc: Exception, code: int = 2) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code) from exc


def _group(version: str) -> str:
    return f"vista-workers-{version}"


@versions_app.command("list")
def list_versions(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every recorded version: state, whether it is promoted, and when it changed."""
    with _registry() as (_, _, versions):
        rows = versions.list()
    if as_json:
        typer.echo(json.dumps([v.as_dict() for v in rows], indent=2))
        return
    typer.echo(f"{'':2}{'model_version':<40} {'state':<12} {'updated_at':<26} note")
    for v in rows:
        mark = "* " if v.promoted else "  "
        typer.echo(f"{mark}{v.model_version:<40} {v.state:<12} {v.as_dict()['updated_at'] or '':<26} {v.note}")
    typer.echo("(* = promoted: what the scorers serve)")


@versions_app.command("status")
def status(
    version: str = typer.Argument(..., help="model_version"),
    topic: str = typer.Option(None, "--topic", help="The workers' input topic (default: VISTA_TOPIC_EVENTS)."),
    group: str = typer.Option(None, "--group", help="The workers' group (default: vista-workers-<version>)."),
) -> None:
    """One version as JSON: its record, its backfill jobs, and its worker group's members and lag."""
    from stream.groups import group_status
    from stream.store import ProgressStore

    with _registry() as (settings, session, versions):
        info = versions.get(version)
        jobs = ProgressStore(session, settings.cassandra_keyspace).job_states(version)
    workers = group_status(settings, group or _group(version), topic or settings.topic_events)
    out = {"version": info.as_dict() if info else None,
           "backfill_jobs": {job: ("done" if all(s == "done" for s in states) else "running")
                             for job, states in sorted(jobs.items())},
           "workers": workers.as_dict()}
    typer.echo(json.dumps(out, indent=2))
    if info is None:
        raise typer.Exit(1)


@versions_app.command("promote")
def promote(version: str = typer.Argument(..., help="model_version (must be live)")) -> None:
    """Make the scorers serve this version (they follow the promotion within their poll interval)."""
    from stream.versions import VersionError

    with _registry() as (_, _, versions):
        try:
            before = versions.promote(version)
        except VersionError as exc:
            _fail(exc)
    typer.echo(f"promoted {version} (was {before or 'none'})")


@versions_app.command("drop")
def drop(
    version: str = typer.Argument(..., help="model_version to retire and delete"),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    batch_size: int = typer.Option(500, "--batch-size", min=1, help="Rows deleted per concurrent batch."),
    topic: str = typer.Option(None, "--topic", help="The workers' input topic (default: VISTA_TOPIC_EVENTS)."),
) -> None:
    """Retire a version (never promoted now, its workers stopped), delete its rows in batches with progress,
    then its worker group. Rerun it to finish an interrupted drop."""
    from stream.groups import delete_group, group_status
    from stream.progress import Progress
    from stream.versions import VersionError, delete_rows

    with _registry() as (settings, session, versions):
        workers = group_status(settings, _group(version), topic or settings.topic_events)
        if workers.members:
            _fail(VersionError(f"{workers.members} worker(s) of {version} are running (group {workers.group}): "
                               "stop them first, or they would write rows again"))
        if not yes:
            typer.confirm(f"Delete every row of model_version {version}?", abort=True)
        try:
            info = versions.retire(version)
        except VersionError as exc:
            _fail(exc)
        bar = Progress(f"drop {version}", unit="rows", interval_s=5.0)
        done = [0]

        def advanced(scanned: int, deleted: int) -> None:
            bar.update(deleted - done[0], scanned=scanned)
            done[0] = deleted
            versions.record_deleted(version, info.rows_deleted + deleted)

        scanned, deleted = delete_rows(session, settings.cassandra_keyspace, version, batch_size=batch_size,
                                       on_progress=advanced)
        bar.close()
    delete_group(settings, workers.group)
    typer.echo(json.dumps({"model_version": version, "state": "retired", "rows_scanned": scanned,
                           "rows_deleted": deleted, "group_deleted": workers.group}))


def register(app: typer.Typer) -> None:
    """Attach `vista versions ...` to the root app."""
    app.add_typer(versions_app, name="versions")
