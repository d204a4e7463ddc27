"""`vista synth`, `vista experiment`, `vista baseline`: synthetic data and the comparison harness."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

DEFAULT_DATA = "../shared/data/ml-100k/u.data"


def synth(
    out: Path = typer.Option(Path("runs/synth/synth.csv"), help="CSV to write (keep it under runs/ or out/)"),
    users: Optional[int] = typer.Option(None, min=1, help="users [config, else 200]"),
    min_events: Optional[int] = typer.Option(None, min=8, help="shortest history [config, else 1000]"),
    max_events: Optional[int] = typer.Option(None, min=8, help="longest history, log-uniform in between [config, else 10000]"),
    return_prob: Optional[float] = typer.Option(None, help="P(a session returns to a long-term interest) [config, else 0.03]"),
    seed: Optional[int] = typer.Option(None, help="[config, else 0]"),
    config: Optional[Path] = typer.Option(None, help="YAML/JSON of SynthConfig fields (flags given override them)"),
) -> None:
    """Write synthetic lifelong users (user_id,item_id,timestamp CSV) whose test items depend on the far past."""
    import yaml

    from models.training.synth import SynthConfig, write_csv

    base = yaml.safe_load(config.read_text()) if config else {}
    try:
        flags = {"users": users, "min_events": min_events, "max_events": max_events,
                 "return_prob": return_prob, "seed": seed}
        # only the flags actually given override the config (the defaults live in SynthConfig)
        cfg = SynthConfig(**{**base, **{k: v for k, v in flags.items() if v is not None}})
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(json.dumps({**write_csv(cfg, out), "config": cfg.model_dump()}, indent=2))


def experiment(
    config: Path = typer.Option(..., help="experiment YAML (see experiments/)"),
    only: Optional[list[str]] = typer.Option(None, help="run only these model names (repeatable)"),
    data: Optional[str] = typer.Option(None, help="override the config's data file"),
    seeds: Optional[str] = typer.Option(None, help="override the seeds, comma-separated"),
) -> None:
    """Train and test every model × seed of a config; results JSON (mean ± std) and a markdown table."""
    from models.training.harness import load_config, run_experiment, table

    cfg = load_config(config)
    updates: dict = {}
    if data:
        updates["data"] = data
    if seeds:
        updates["seeds"] = [int(s) for s in seeds.split(",")]
    if updates:
        cfg = cfg.model_validate({**cfg.model_dump(), **updates})
    payload = run_experiment(cfg, only=only, log=lambda msg: typer.echo(msg, err=True))
    typer.echo(table(payload))
    typer.echo(f"results: {cfg.results_path}", err=True)


def baseline(
    kind: str = typer.Option(..., "--model", help="popular, sasrec, hstu or sim"),
    data: str = typer.Option(DEFAULT_DATA, help="u.data, a user_id,item_id,timestamp CSV or JSONL"),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("runs/baseline"), help="logs, checkpoint and results"),
    model_json: str = typer.Option("{}", "--model-config", help="architecture overrides as JSON"),
    train_json: str = typer.Option("{}", "--train-config", help="training overrides as JSON"),
) -> None:
    """Train and test one baseline with one seed (the harness with a single run)."""
    from models.training.harness import ExperimentConfig, run_experiment

    try:
        cfg = ExperimentConfig(name=kind, data=data, seeds=[seed], out_dir=str(out),
                               runs=[{"name": kind, "kind": kind, "model": json.loads(model_json),
                                      "train": json.loads(train_json)}])
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if cfg.results_path.exists():
        cfg.results_path.unlink()  # a one-off run always retrains
    payload = run_experiment(cfg, log=lambda msg: typer.echo(msg, err=True))
    typer.echo(json.dumps(payload["models"][kind]["runs"][str(seed)], indent=2, default=str))


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
    app.command("experiment")(experiment)
    app.command("baseline")(baseline)
