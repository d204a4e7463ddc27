"""`vista worker` (the stream worker) and `vista produce` (replay a dataset into Kafka)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.logs import configure_logging


def worker(
    ckpt: Path = typer.Option(..., "--ckpt", help="Checkpoint directory (its model_version keys the rows)."),
    topic: Optional[str] = typer.Option(None, help="Input topic (default: VISTA_TOPIC_EVENTS)."),
    dlq_topic: Optional[str] = typer.Option(None, "--dlq-topic",
                                            help="Dead-letter topic (default: VISTA_TOPIC_EVENTS_DLQ)."),
    group: str = typer.Option("vista-workers", help="Kafka consumer group of the workers."),
    batch_events: int = typer.Option(5000, "--batch-events", help="Close a micro-batch at this many records."),
    batch_ms: int = typer.Option(200, "--batch-ms", help="... or after this many milliseconds."),
    max_event_bytes: int = typer.Option(16 * 1024, "--max-event-bytes", help="Larger payloads go to the DLQ."),
    device: str = typer.Option("auto", help="auto | cpu | cuda[:i]"),
    threads: Optional[int] = typer.Option(None, help="torch intra-op threads."),
    update_chunk: int = typer.Option(32, "--update-chunk", help="Time chunk of the ragged update."),
    cache_users: int = typer.Option(500_000, "--cache-users", help="In-process row cache size (0 = only the last batch)."),
    backoff_max: float = typer.Option(10.0, "--backoff-max", help="Cap of the retry delay (seconds)."),
    session_timeout_ms: int = typer.Option(10_000, "--session-timeout-ms",
                                           help="How soon a dead worker's partitions move to the others."),
    metrics_port: int = typer.Option(0, "--metrics-port", help="Serve Prometheus /metrics on this port (0 = off)."),
    until_caught_up: bool = typer.Option(False, "--until-caught-up",
                                         help="Exit once all assigned partitions are consumed and committed."),
    log_level: str = typer.Option("INFO", "--log-level"),
) -> None:
    """Consume events, keep every user's state and seeds fresh in Cassandra (exactly-once in effect)."""
    from infra.settings import load_settings
    from stream.worker import Worker, WorkerConfig

    configure_logging(log_level)
    config = WorkerConfig(ckpt=ckpt, topic=topic, dlq_topic=dlq_topic, group_id=group,
                          batch_max_events=batch_events, batch_max_ms=batch_ms, max_event_bytes=max_event_bytes,
                          device=device, torch_threads=threads, update_chunk=update_chunk,
                          cache_max_users=cache_users, backoff_max_s=backoff_max,
                          session_timeout_ms=session_timeout_ms, metrics_port=metrics_port,
                          until_caught_up=until_caught_up)
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` dumps every thread's stack to the log
    w = Worker(config, load_settings())
    w.install_signal_handlers()
    w.run()


def produce(
    data: Path = typer.Option(..., "--data", help="u.data, a user_id,item_id,timestamp CSV, or JSONL."),
    rate: Optional[float] = typer.Option(None, help="Events per second (default: as fast as possible)."),
    limit: Optional[int] = typer.Option(None, help="Send only the first N events (in timestamp order)."),
    topic: Optional[str] = typer.Option(None, help="Target topic (default: VISTA_TOPIC_EVENTS)."),
    user_prefix: str = typer.Option("", "--user-prefix", help="Prepended to every user id (namespacing)."),
) -> None:
    """Replay a dataset into Kafka in timestamp order, keyed by user."""
    from infra.settings import load_settings
    from stream.producer import replay

    if not data.exists():
        raise typer.BadParameter(f"{data} does not exist", param_hint="--data")
    n = replay(load_settings(), data, topic=topic, rate=rate, limit=limit, user_prefix=user_prefix)
    typer.echo(f"sent {n} events")


def register(app: typer.Typer) -> None:
    """Attach `worker` and `produce` to the root app."""
    app.command("worker")(worker)
    app.command("produce")(produce)
