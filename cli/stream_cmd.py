"""`vista worker` (the stream worker) and `vista produce` (replay a dataset into Kafka)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.logs import configure_logging
from cli.options import config_options
from stream.worker import WorkerConfig


@config_options(WorkerConfig, {
    "topic": "--topic", "dlq_topic": "--dlq-topic", "group_id": "--group", "batch_max_events": "--batch-events",
    "batch_max_ms": "--batch-ms", "max_event_bytes": "--max-event-bytes", "max_future_s": "--max-future", "device": "--device",
    "backend": "--backend",
    "torch_threads": "--threads", "update_chunk": "--update-chunk", "cache_mb": "--cache-mb",
    "backoff_max_s": "--backoff-max", "session_timeout_ms": "--session-timeout-ms", "metrics_port": "--metrics-port", "metrics_host": "--metrics-host",
    "until_caught_up": "--until-caught-up", "cold_start": "--cold-start", "progress_interval_s": "--progress-interval",
})
def worker(
    ckpt: Path = typer.Option(..., "--ckpt", help="Checkpoint directory (its model_version keys the rows)."),
    log_level: str = typer.Option("INFO", "--log-level"),
    *,
    config: dict,
) -> None:
    """Consume events, keep every user's state and summary fresh in Cassandra (exactly-once in effect)."""
    import faulthandler
    import signal

    from infra.settings import load_settings
    from stream.worker import Worker

    configure_logging(log_level)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` dumps every thread's stack to the log
    w = Worker(WorkerConfig(ckpt=ckpt, **config), load_settings())
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
