"""`vista train`, `vista eval`, `vista recommend`: the model lifecycle on a dataset file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from kernels.dispatch import BACKEND_HELP

DEFAULT_DATA = "../shared/data/ml-100k/u.data"


def _echo_json(payload: dict) -> None:
    typer.echo(json.dumps(payload, indent=2, default=str))


def train(
    data: Path = typer.Option(DEFAULT_DATA, help="u.data, a user_id,item_id,timestamp CSV or JSONL"),
    out: Path = typer.Option(Path("runs/model"), help="checkpoint directory"),
    preset: str = typer.Option("general", help="model + training preset (models/presets/NAME.yaml): general, "
                               "beauty, synthetic, target, paper-faithful"),
    time_budget: Optional[float] = typer.Option(None, help="training seconds (early stopping may end sooner; "
                                                "default: the preset's, 300)"),
    epochs: Optional[int] = typer.Option(None, help="maximum epochs (default: the preset's)"),
    seed: int = typer.Option(0),
    config: Optional[Path] = typer.Option(None, help="JSON/YAML with 'model' and 'train' sections: overrides "
                                          "on top of the preset"),
    rerank: Optional[bool] = typer.Option(None, "--rerank/--no-rerank", help="after the stack, train the residual "
                                          "reranker Δ on it (default: the preset's choice; beauty: yes). The "
                                          "checkpoint is then the whole model, with Δ's validation verdict, and the "
                                          "stack alone is kept in OUT/stack"),
    backend: Optional[str] = typer.Option(None, help=f"{BACKEND_HELP} (default: the training config's)"),
) -> None:
    """Train VISTA (next-item prediction), keep the best validation epoch, report test metrics as JSON."""
    import yaml

    from models.checkpoint import save_checkpoint
    from models.preset import build_configs, load_preset
    from models.training.data import encode, leave_one_out, load_dataset
    from models.training.evaluate import evaluate, popularity_score_fn, vista_score_fn
    from models.training.trainer import train_vista
    from models.vista import VistaModel

    overrides = yaml.safe_load(config.read_text()) if config else {}
    ds = load_dataset(data)
    split = leave_one_out(encode(ds))
    budget = {k: v for k, v in (("time_budget_s", time_budget), ("epochs", epochs), ("backend", backend))
              if v is not None}
    try:
        cfg, tcfg = build_configs(preset, len(ds.vocab), model=overrides.get("model"),
                                  train={**budget, "seed": seed, **overrides.get("train", {})})
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--preset / --config") from exc
    typer.echo(f"{ds.name}: {len(ds.sequences)} users, {len(ds.vocab)} items, {ds.num_events} events; "
               f"preset {preset}, budget {tcfg.time_budget_s:.0f} s", err=True)
    model = VistaModel(cfg)
    log_path = out / "train_log.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    log_path.write_text("")

    def log(record: dict) -> None:
        with log_path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        typer.echo(f"epoch {record['epoch']}: loss {record.get('train_loss', float('nan')):.4f} "
                   f"val NDCG@10 {record['val_NDCG@10']:.4f} HR@10 {record['val_HR@10']:.4f} "
                   f"({record['elapsed_s']}s)", err=True)

    summary = train_vista(model, ds.vocab, split, tcfg, log=log,
                          checkpoint=lambda m, rec: save_checkpoint(out, m, ds.vocab, {"epoch": rec["epoch"]}))
    test = evaluate(vista_score_fn(model, ds.vocab), split.test, len(ds.vocab))
    pop = evaluate(popularity_score_fn(split.train, len(ds.vocab)), split.test, len(ds.vocab))
    version = save_checkpoint(out, model, ds.vocab, {"data": str(data), "preset": preset, "train": summary,
                                                      "test": test})
    report = {"model_version": version, "checkpoint": str(out), "preset": preset, "epochs": summary["epochs"],
              "train_time_s": summary["train_time_s"], "HR@10": test["HR@10"], "NDCG@10": test["NDCG@10"],
              "test": test, "most_popular": pop, "best_val": summary["best_val"]}
    options = load_preset(preset).rerank  # the preset's reranker stage (None: the stack alone)
    if rerank is None:
        rerank = options is not None
    if rerank:
        report["reranker"] = _train_reranker(model, ds.vocab, split, out, options or {}, tcfg.time_budget_s, seed,
                                             {"data": str(data), "preset": preset, "stack_test": test})
    _echo_json(report)


def _train_reranker(stack, vocab, split, out: Path, options: dict, budget_s: float, seed: int,  # noqa: ANN001
                    meta: dict) -> dict:
    """Second stage: Δ on the frozen stack for at most the stack's budget, validated on every user; the whole
    model is saved to `out` with the verdict the scorer reads, the stack alone to `out/stack`."""
    import shutil

    from models.checkpoint import save_checkpoint
    from models.training.evaluate import evaluate, vista_score_fn
    from models.training.rerank import RerankConfig, train_reranker, verdict, with_reranker

    shutil.copytree(out, out / "stack", dirs_exist_ok=True, ignore=shutil.ignore_patterns("stack"))
    rcfg = RerankConfig(**{"time_budget_s": budget_s, "eval_users": len(split.valid), **options, "seed": seed})
    whole = with_reranker(stack)
    summary = train_reranker(whole, vocab, split, rcfg, log=lambda r: typer.echo(
        f"reranker epoch {r['epoch']}: val NDCG@10 {r['val_NDCG@10']:.4f} ({r['elapsed_s']}s)", err=True))
    decided = verdict(summary, rcfg)
    test = evaluate(vista_score_fn(whole, vocab, rerank_top=rcfg.rerank_top), split.test, len(vocab))
    version = save_checkpoint(out, whole, vocab, {**meta, "reranker": decided, "test": test})
    typer.echo(f"reranker {'passed' if decided['passed'] else 'did not pass'} validation: the scorer serves "
               f"{'the whole model' if decided['passed'] else 'the stack alone'}", err=True)
    return {"model_version": version, **decided, "test_cascade": test, "train_time_s": summary["train_time_s"]}


def _load_for_inference(ckpt: Path, device: str, backend: str):  # noqa: ANN202 - (model, vocab, meta)
    """A checkpoint on `device` with the QLA `backend` resolved (a bad choice is a usage error, never a fallback)."""
    from kernels.dispatch import resolve_backend
    from models.checkpoint import load_checkpoint
    from models.device import resolve_device

    try:
        model, vocab, meta = load_checkpoint(ckpt, device=resolve_device(device))
        model.backend = resolve_backend(backend, model.device, model.cfg.head_dim)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--device/--backend") from exc
    return model, vocab, meta


DEVICE_HELP = "auto (cuda when present, else cpu) | cpu | cuda[:i]"


def evaluate_cmd(
    ckpt: Path = typer.Option(..., help="checkpoint directory written by `vista train`"),
    data: Path = typer.Option(DEFAULT_DATA),
    split_name: str = typer.Option("test", "--split", help="test or valid"),
    exclude_seen: bool = typer.Option(True, "--exclude-seen/--include-seen", help="rank the held-out item among "
                                      "the items the user has not consumed, or among every item (re-consumption "
                                      "data: masking the seen items gives the target away)"),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    backend: str = typer.Option("auto", help=BACKEND_HELP),
) -> None:
    """Leave-one-out full-ranking metrics of a checkpoint, as JSON."""
    from models.training.data import encode, leave_one_out, load_dataset
    from models.training.evaluate import evaluate, popularity_score_fn, vista_score_fn

    model, vocab, meta = _load_for_inference(ckpt, device, backend)
    ds = load_dataset(data, oov_buckets=vocab.oov_buckets)
    split = leave_one_out(encode(ds, vocab))
    cases = split.test if split_name == "test" else split.valid
    metrics = evaluate(vista_score_fn(model, vocab), cases, len(vocab), exclude_seen=exclude_seen)
    pop = evaluate(popularity_score_fn(split.train, len(vocab)), cases, len(vocab), exclude_seen=exclude_seen)
    _echo_json({"model_version": meta["model_version"], "split": split_name, "exclude_seen": exclude_seen,
                "HR@10": metrics["HR@10"],
                "NDCG@10": metrics["NDCG@10"], "metrics": metrics, "most_popular": pop})


def recommend(
    ckpt: Path = typer.Option(..., help="checkpoint directory"),
    data: Path = typer.Option(DEFAULT_DATA, help="history source"),
    user: str = typer.Option(..., help="user id whose whole history in --data is summarized"),
    top_k: int = typer.Option(10, min=1),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    backend: str = typer.Option("auto", help=BACKEND_HELP),
) -> None:
    """Summarize one user's history and print the top-k items (seen items excluded)."""
    import torch

    from models.state import EventBatch
    from models.training.data import load_dataset

    model, vocab, _ = _load_for_inference(ckpt, device, backend)
    ds = load_dataset(data, oov_buckets=vocab.oov_buckets)
    seq = next((s for s in ds.sequences if s.user == user), None)
    if seq is None:
        raise typer.BadParameter(f"user {user!r} has no events in {data}", param_hint="--user")
    events = EventBatch(vocab.encode(seq.items), _long(seq.actions), _long(seq.timestamps),
                        torch.tensor([len(seq)]))
    with torch.no_grad():
        summary = model.summarize(model.update(model.init_state(1), events))
        scores = model.score(summary, vocab.known_indices())[0]
    seen = {vocab.index(i) - 1 for i in seq.items if vocab.is_known(i)}
    scores[list(seen)] = float("-inf")
    top = scores.topk(top_k)
    typer.echo(f"user {user}: {len(seq)} events summarized; top {top_k}:")
    typer.echo(f"{'rank':>4}  {'item':>10}  {'score':>8}")
    for rank, (score, col) in enumerate(zip(top.values.tolist(), top.indices.tolist()), 1):
        typer.echo(f"{rank:>4}  {vocab.decode(col + 1):>10}  {score:8.3f}")


def _long(values: list[int]):
    import torch

    return torch.tensor(values, dtype=torch.long)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("eval")(evaluate_cmd)
    app.command("recommend")(recommend)
