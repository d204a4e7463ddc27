"""`vista backfill`: historical logs (files or a Kafka topic) -> stored summaries, resumable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from cli.options import config_options
from schemas.source_keys import partition_key
from stream.backfill_settings import BackfillSettings


def _parse_offsets(text: str, topic: str) -> dict[str, int]:
    """'0:120,1:98' (partition:end offset, exclusive) -> {'topic:0': 120, ...}."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        partition, _, offset = part.partition(":")
        if not partition.isdigit() or not offset.lstrip("-").isdigit():
            raise typer.BadParameter(f"bad handover offset {part!r}; expected PARTITION:END_OFFSET")
        out[partition_key(topic, int(partition))] = int(offset)
    return out


@config_options(BackfillSettings, {
    "chunk_events": "--chunk-events", "cache_mb": "--cache-mb", "max_bad_fraction": "--max-bad-fraction",
    "progress_bar": "--progress/--no-progress", "shards": "--shards", "shard": "--shard",
    "rebuild_users": "--rebuild-user", "backend": "--backend",
})
def backfill(
    source: str = typer.Argument(..., help="a log file (u.data, CSV, JSONL, Parquet) or kafka:TOPIC"),
    ckpt: Path = typer.Option(..., "--ckpt", help="model checkpoint directory (its model_version keys the rows)"),
    fmt: Optional[str] = typer.Option(None, "--format", help="movielens | csv | jsonl | parquet (default: detect)"),
    job_id: Optional[str] = typer.Option(None, help="progress key (default: <model_version>/<source>: reruns resume)"),
    handover_topic: Optional[str] = typer.Option(
        None, help="file sources: the live topic whose cut is stamped into rows (default: VISTA_TOPIC_EVENTS)"),
    handover_offsets: Optional[str] = typer.Option(
        None, help="file sources: the cut as PARTITION:END_OFFSET,... (default: the topic's end offsets now)"),
    no_handover: bool = typer.Option(False, "--no-handover", help="file sources: stamp no cut (offline use only)"),
    bad_records: Optional[Path] = typer.Option(
        None, help="append every malformed record (location, reason, text) here as JSONL"),
    device: str = typer.Option("auto", help="auto (cuda when present, else cpu) | cpu | cuda[:i]"),
    *,
    config: dict,
) -> None:
    """Replay a historical log into summary rows under the checkpoint's model_version, then hand over to the worker.

    Prints a JSON summary (users, events, bad records by reason with line numbers, time, events/s).
    """
    from infra.cassandra import connect
    from infra.settings import InfraSettings
    from kernels.dispatch import resolve_backend
    from models.checkpoint import load_checkpoint
    from models.device import resolve_device
    from stream.backfill import BackfillError, original_cut, rebuild_live_part, run_backfill
    from stream.sources import FileSource, KafkaSource, end_offsets
    from stream.store import ProgressStore, SummaryStore
    from stream.versions import VersionError, VersionStore

    settings = InfraSettings()
    try:
        torch_device = resolve_device(device)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--device") from exc
    model, vocab, meta = load_checkpoint(ckpt, device=torch_device)
    try:
        model.backend = resolve_backend(config["backend"], torch_device, model.cfg.head_dim)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--backend") from exc
    version = meta["model_version"]
    handover = None
    topic = handover_topic or settings.topic_events
    cfg = BackfillSettings(**config)
    if source.startswith("kafka:"):
        src: FileSource | KafkaSource = KafkaSource(settings, source.removeprefix("kafka:"))
    else:
        src = FileSource(source, fmt)  # type: ignore[arg-type]
        if not no_handover and handover_offsets:
            handover = _parse_offsets(handover_offsets, topic)
        elif not no_handover and not cfg.rebuild_users:  # a rebuild takes the cut its user's rows were built with
            handover = end_offsets(settings, topic)
    session = connect(settings)
    try:
        progress, versions, store = ProgressStore(session), VersionStore(session), SummaryStore(session)
        try:
            if not cfg.rebuild_users:  # a rebuild of single users is maintenance, not a version's backfill
                versions.register_backfill(version, src.description)
            rebuild_from_file = bool(cfg.rebuild_users) and isinstance(src, FileSource) and not no_handover
            if rebuild_from_file and handover is None:
                handover = {s: o + 1 for s, o in original_cut(progress, version, src).items()}
            report = run_backfill(model, vocab, version, src, store, progress,
                                  job_id=job_id, settings=cfg, handover=handover, bad_records_path=bad_records)
            if rebuild_from_file and report.status == "done":  # then the users' live events after the cut
                live = rebuild_live_part(model, vocab, version, KafkaSource(settings, topic), store, progress,
                                         users=cfg.rebuild_users, cut=report.handover, job_id=f"{report.job_id}-live",
                                         settings=cfg)
                report.live_part = live.as_dict()
            if not cfg.rebuild_users and report.job_id in progress.finished_jobs(version):
                versions.mark_live(version, f"backfill {report.job_id} finished")
        except (BackfillError, VersionError) as exc:
            typer.echo(f"backfill stopped: {exc}", err=True)
            raise typer.Exit(code=2) from None
    finally:
        session.cluster.shutdown()
    if report.out_of_order:
        typer.echo(f"note: {report.out_of_order} of {report.events} events were older than their user's previous "
                   "event: the log is not in time order per user and was replayed as written (their time gap "
                   "counts as 0). If users' histories should be in time order, sort the file first (e.g. "
                   "`sort -s -t$'\\t' -k4,4n u.data`, which works in bounded memory) and backfill that.", err=True)
    typer.echo(json.dumps(report.as_dict(), indent=2, default=str))


def register(app: typer.Typer) -> None:
    """Attach `vista backfill` to the root app."""
    app.command("backfill")(backfill)
