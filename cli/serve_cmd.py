"""`vista serve` (the scoring service) and `vista score` (ask it to rank items for a user)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from cli.logs import configure_logging
from cli.options import config_options
from stream.scorer.config import ScorerConfig


@config_options(ScorerConfig, {
    "expected_model_version": "--model-version", "device": "--device", "backend": "--backend",
    "torch_threads": "--threads",
    "max_candidates": "--max-candidates", "cache_ttl_s": "--cache-ttl", "cache_mb": "--cache-mb",
    "batch_wait_ms": "--batch-wait-ms", "batch_max_requests": "--batch-max", "ranker": "--ranker",
    "rerank_top": "--rerank-top", "version_poll_s": "--version-poll",
})
def serve(
    ckpt: list[Path] = typer.Option(..., "--ckpt", help="Checkpoint directory (its model_version keys the rows); "
                                    "repeat it to load several versions: the promoted one is served."),
    host: str = typer.Option("127.0.0.1", help="Listen address."),
    port: int = typer.Option(8080, help="Listen port."),
    kafka: bool = typer.Option(False, "--kafka/--no-kafka", help="Also answer score-requests from Kafka."),
    kafka_group: str = typer.Option("vista-scorer", "--kafka-group", help="Consumer group of the Kafka path."),
    ssl_certfile: Optional[Path] = typer.Option(None, "--ssl-certfile", help="Serve HTTPS with this PEM "
                                                "certificate (chain); needs --ssl-keyfile."),
    ssl_keyfile: Optional[Path] = typer.Option(None, "--ssl-keyfile", help="The certificate's PEM private key."),
    log_level: str = typer.Option("INFO", "--log-level"),
    *,
    config: dict,
) -> None:
    """Serve POST /v1/score, /healthz, /readyz and /metrics (and optionally the Kafka path)."""
    import threading

    import uvicorn

    from infra.settings import load_settings
    from stream.scorer.engine import ScoringEngine, UnknownModelError
    from stream.scorer.metrics import ScorerMetrics
    from stream.scorer.served import ServedModels
    from stream.scorer.service import connect_store, create_app
    from stream.versions import VersionStore

    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise typer.BadParameter("give both --ssl-certfile and --ssl-keyfile, or neither", param_hint="--ssl-keyfile")
    configure_logging(log_level)
    # the API key comes from the environment only: a command-line secret would show in `ps`
    api_key = os.environ.get("VISTA_SCORER_API_KEY") or None
    configs = [ScorerConfig(ckpt=path, api_key=api_key, **config) for path in ckpt]
    settings = load_settings()
    try:  # the models first: a bad model fails before any I/O
        engines = [ScoringEngine(c, store=None) for c in configs]
    except UnknownModelError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    session, store = connect_store(settings)
    registry = VersionStore(session, settings.cassandra_keyspace)
    try:
        promoted = registry.promoted()
        served = ServedModels.choose(engines, pinned=configs[0].expected_model_version, promoted=promoted)
    except UnknownModelError as exc:
        session.cluster.shutdown()
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    for engine in engines:
        engine.store = store
    engine = served.current
    metrics = ScorerMetrics()
    kafka_scorer, serving_paths = None, {}
    if kafka:
        from stream.scorer.kafka_path import KafkaScorer

        kafka_scorer = KafkaScorer(served, settings, group_id=kafka_group, metrics=metrics)
        kafka_thread = threading.Thread(target=kafka_scorer.run, name="kafka-scorer", daemon=True)
        kafka_thread.start()
        serving_paths["kafka_path"] = kafka_thread.is_alive
    scheme = "https" if ssl_certfile else "http"
    how = "pinned" if served.pinned else "promoted" if promoted else "nothing promoted yet"
    typer.echo(f"serving model_version {engine.model_version} ({how}; {engine.ranker}: {engine.ranker_reason}) "
               f"on {scheme}://{host}:{port}", err=True)
    try:
        app = create_app(served, session, metrics=metrics, close_session=True, serving_paths=serving_paths,
                         promoted_version=registry.promoted)
        uvicorn.run(app,
                    host=host, port=port, log_level="warning", access_log=False,
                    ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
                    ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None)
    finally:
        if kafka_scorer is not None:
            kafka_scorer.stop()


def score(
    user: str = typer.Option(..., "--user", help="User id."),
    candidates: Optional[str] = typer.Option(None, "--candidates", help="Comma-separated item ids."),
    all_items: bool = typer.Option(False, "--all-items", help="Rank every item the model knows."),
    top_k: int = typer.Option(10, "--top-k", help="Rows to print."),
    url: str = typer.Option("http://127.0.0.1:8080", "--url", help="Scorer base URL."),
) -> None:
    """Rank items for a user through a running `vista serve` and print a table."""
    from stream.scorer.client import ScorerClient, ScorerError

    if bool(candidates) == all_items:
        raise typer.BadParameter("give exactly one of --candidates or --all-items", param_hint="--candidates")
    with ScorerClient(url) as client:
        try:
            items = client.items() if all_items else [c.strip() for c in (candidates or "").split(",")]
            resp = client.score(user, items, top_k=top_k)
        except ScorerError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
    f = resp.freshness
    typer.echo(f"user {resp.user_id}  model {resp.model_version}  events_seen {f.events_seen}  "
               f"last_event_ts {f.last_event_ts}  updated_at {f.updated_at}")
    typer.echo(f"ranker {resp.ranker}" + (f" (reranked {resp.reranked} of {len(items)})" if resp.reranked else ""))
    typer.echo(f"{'rank':>4}  {'item':<24} {'score':>10}  known")
    for it in resp.items:
        typer.echo(f"{it.rank:>4}  {it.item_id:<24} {it.score:>10.4f}  {'yes' if it.known else 'no (OOV)'}")


def register(app: typer.Typer) -> None:
    """Attach `serve` and `score` to the root app."""
    app.command("serve")(serve)
    app.command("score")(score)
