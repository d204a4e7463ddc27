"""Experiment harness: one YAML config -> every model × seed through the same split and protocol -> results JSON.

Protocol (identical for every model): leave-one-out split from `data.leave_one_out`, training and early
stopping on the validation cases only, test metrics by `evaluate.evaluate` (full ranking, seen items
excluded). Each finished run is written to the results JSON at once and skipped on a rerun, so a
background experiment that is interrupted resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from models.training.data import LeaveOneOut, encode, leave_one_out, load_dataset
from models.preset import load_preset
from models.training.evaluate import evaluate

Kind = Literal["vista", "sasrec", "hstu", "sim", "popular"]
REPORTED = ("HR@1", "HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR",
            "diag_across_user_variance_share", "diag_distinct_top10_items")


class RunSpec(BaseModel):
    """One model of an experiment: its family, architecture overrides and training overrides."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="row name in the results table (unique per experiment)")
    kind: Kind
    preset: str | None = Field(default=None, description="VISTA only: the preset the overrides apply to "
                               "(models/presets/; None: general)")
    model: dict[str, Any] = Field(default_factory=dict, description="architecture overrides (the family's config)")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig / BaselineTrainConfig overrides")
    rerank: dict[str, Any] | None = Field(default=None, description=(
        "VISTA only: after the stack, train the residual reranker Δ on it (RerankConfig overrides; "
        "`stack_from`: a checkpoint directory with {seed}, to reuse a trained stack instead); test metrics are "
        "then the cascade's, with the stack's and the diagnostics beside them"))
    history_window: int | None = Field(default=None, ge=1, description=(
        "make any model windowed: it trains on and is served only the last N events (isolates long history)"))


class ExperimentConfig(BaseModel):
    """A whole experiment: data, seeds, models; where logs, checkpoints and results go."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    data: str = Field(description="u.data, a user_id,item_id,timestamp CSV or JSONL")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    runs: list[RunSpec] = Field(min_length=1)
    out_dir: str = Field(default="runs/experiments", description="logs and checkpoints go to out_dir/name/model/seedN")
    results: str | None = Field(default=None, description="results JSON (default out_dir/name/results.json)")
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads for the whole experiment")
    defaults: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                description="per-kind train overrides applied before each run's own")
    exclude_seen: bool = Field(default=True, description="evaluation protocol for every model: rank the held-out "
                               "item among the unconsumed items (True) or among all items (False: re-consumption)")
    both_protocols: bool = Field(default=False, description="also test every model under the other protocol "
                                 "(`test_other` per run, `aggregate_other` per model); validation keeps `exclude_seen`")

    @field_validator("runs")
    @classmethod
    def _presets(cls, runs: list[RunSpec]) -> list[RunSpec]:
        for r in runs:
            if r.preset is not None:
                if r.kind != "vista":
                    raise ValueError(f"run {r.name}: presets are VISTA's, not {r.kind}'s")
                load_preset(r.preset)
        return runs

    @field_validator("runs")
    @classmethod
    def _unique(cls, runs: list[RunSpec]) -> list[RunSpec]:
        names = [r.name for r in runs]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"run names must be unique, repeated: {sorted(dup)}")
        return runs

    @property
    def run_root(self) -> Path:
        return Path(self.out_dir) / self.name

    @property
    def results_path(self) -> Path:
        return Path(self.results) if self.results else self.run_root / "results.json"


def load_config(path: str | Path) -> ExperimentConfig:
    """Parse and validate an experiment YAML (or JSON)."""
    src = Path(path)
    if not src.exists():
        raise FileNotFoundError(f"experiment config not found: {src}")
    raw = yaml.safe_load(src.read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{src}: expected a mapping at the top level")
    return ExperimentConfig.model_validate(raw)


def set_seed(seed: int) -> None:
    """Every RNG a run touches, so the same (config, seed) gives the same model."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def aggregate(runs: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and sample std (n − 1; 0 for one run) of each reported metric over seeds."""
    out: dict[str, dict[str, float]] = {}
    for metric in REPORTED:
        values = [r[metric] for r in runs.values() if metric in r]
        if not values:
            continue
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        out[metric] = {"mean": mean, "std": std, "n": len(values)}
    return out


def windowed(split: LeaveOneOut, n: int) -> LeaveOneOut:
    """The same split as a model that keeps only the last `n` events would see it.

    Training sequences are cut into chunks of n + 1 events (stride n: every target once, never more than
    n events of context); validation and test histories are truncated to their last n events. Targets
    are unchanged, so the metrics stay comparable with the full-history runs.
    """
    train = []
    for s in split.train:
        for end in range(len(s), 1, -n):
            train.append(s.slice(end, max(0, end - n - 1)))
    cut = lambda cases: [(h.slice(len(h), max(0, len(h) - n)), t) for h, t in cases]  # noqa: E731
    return LeaveOneOut(train, cut(split.valid), cut(split.test))


def run_one(spec: RunSpec, split: LeaveOneOut, vocab, seed: int, run_dir: Path,
            defaults: dict[str, Any] | None = None, log: Callable[[str], None] = print,
            both_protocols: bool = False) -> dict:
    """Train one model with one seed, then evaluate it on the test cases. Returns test metrics + training summary
    (and with `both_protocols` the test metrics under the other protocol too)."""
    num_items = len(vocab)
    if spec.history_window:
        split = windowed(split, spec.history_window)
    set_seed(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "train_log.jsonl"
    log_path.write_text("")
    train_overrides = {**(defaults or {}), **spec.train}
    exclude_seen = bool(train_overrides.get("exclude_seen", True))

    def record(rec: dict) -> None:
        with log_path.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        log(f"{spec.name} seed {seed} epoch {rec['epoch']}: val NDCG@10 {rec['val_NDCG@10']:.4f} "
            f"HR@10 {rec['val_HR@10']:.4f} ({rec['elapsed_s']}s)")

    start = time.monotonic()
    if spec.kind == "popular":
        from models.baselines.popular import MostPopular

        score_fn = MostPopular(num_items).fit(split.train).score_fn()
        summary: dict = {"epochs": 0, "train_time_s": 0.0}
    elif spec.kind == "vista":
        from models.checkpoint import save_checkpoint
        from models.preset import DEFAULT_PRESET, build_configs
        from models.training.evaluate import vista_score_fn
        from models.training.trainer import train_vista
        from models.vista import VistaModel

        # experiment-wide budget rules, then the preset's training, then the row's own overrides
        cfg, tcfg = build_configs(spec.preset or DEFAULT_PRESET, num_items, model=spec.model,
                                  train={**spec.train, "seed": seed}, train_defaults=defaults)
        stack_from = (spec.rerank or {}).get("stack_from")
        holdout = (spec.rerank or {}).get("holdout")
        if holdout:  # the stack trains without each sequence's last items; Δ learns on them (rerank.py)
            from models.training.rerank import held_out_split

            stack_split = held_out_split(split, int(holdout))
        else:
            stack_split = split
        if stack_from:
            from models.checkpoint import load_checkpoint

            model, _, meta = load_checkpoint(str(stack_from).format(seed=seed))
            summary = {"stack_from": str(stack_from).format(seed=seed), "stack_model_version": meta["model_version"]}
        else:
            model = VistaModel(cfg)
            summary = train_vista(model, vocab, stack_split, tcfg, log=record,
                                  checkpoint=lambda m, rec: save_checkpoint(run_dir / "checkpoint", m, vocab,
                                                                            {"epoch": rec["epoch"]}))
        score_fn = vista_score_fn(model, vocab, rerank_top=tcfg.rerank_top)
        if spec.rerank is not None:
            return _rerank_run(model, vocab, split, spec, seed, run_dir, summary, record, start, exclude_seen)
    else:
        from models.baselines import build_baseline
        from models.baselines.train import BaselineTrainConfig, save_weights, train_baseline

        model = build_baseline(spec.kind, num_items, **spec.model)
        summary = train_baseline(model, split, num_items, BaselineTrainConfig(**{**train_overrides, "seed": seed}),
                                 log=record, checkpoint=lambda m, rec: save_weights(
                                     run_dir / "checkpoint", m, m.cfg, {"epoch": rec["epoch"], "kind": spec.kind}))
        score_fn = model.score_fn()
    test = evaluate(score_fn, split.test, num_items, exclude_seen=exclude_seen)
    summary.pop("history", None)  # it is in train_log.jsonl
    out = {"test": test, "train": summary, "wall_s": round(time.monotonic() - start, 1)}
    if both_protocols:
        out["test_other"] = {"exclude_seen": not exclude_seen,
                             **evaluate(score_fn, split.test, num_items, exclude_seen=not exclude_seen)}
    return out


def _rerank_run(stack, vocab, split: LeaveOneOut, spec: RunSpec, seed: int, run_dir: Path, stack_summary: dict,
                record: Callable[[dict], None], start: float,
                exclude_seen: bool = True) -> dict:  # noqa: ANN001 - VistaModel, ItemVocab
    """Second stage of a `rerank` row: Δ on the frozen stack, then the test in the cascade protocol (N = 100 and
    200) for the whole model and the stack, full ranking for the stack, and Δ's diagnostics."""
    from models.checkpoint import save_checkpoint
    from models.training.evaluate import vista_score_fn
    from models.training.rerank import (RerankConfig, rerank_diagnostics, stack_score_fn, train_reranker, verdict,
                                        with_reranker)

    num_items = len(vocab)
    rcfg = RerankConfig(**{k: v for k, v in (spec.rerank or {}).items() if k != "stack_from"}, seed=seed,
                        exclude_seen=exclude_seen)
    model = with_reranker(stack)
    summary = train_reranker(model, vocab, split, rcfg, log=record)
    save_checkpoint(run_dir / "checkpoint_reranker", model, vocab, {"reranker": verdict(summary, rcfg)})
    summary.pop("history", None)
    cascades = {n: evaluate(vista_score_fn(model, vocab, rerank_top=n), split.test, num_items,
                            exclude_seen=exclude_seen) for n in (100, 200)}
    return {"test": cascades[rcfg.rerank_top] if rcfg.rerank_top in cascades else
            evaluate(vista_score_fn(model, vocab, rerank_top=rcfg.rerank_top), split.test, num_items,
                     exclude_seen=exclude_seen),
            "test_cascade": {str(n): m for n, m in cascades.items()},
            "test_stack": evaluate(stack_score_fn(model, vocab), split.test, num_items, exclude_seen=exclude_seen),
            "diagnostics": rerank_diagnostics(model, vocab, split.test, rcfg.rerank_top),
            "train": {"stack": {k: v for k, v in stack_summary.items() if k != "history"}, "reranker": summary},
            "wall_s": round(time.monotonic() - start, 1)}


def _write(path: Path, payload: dict) -> None:
    """Atomic replace, so a killed run never leaves a truncated results file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)


@contextmanager
def _locked(path: Path) -> Iterator[dict]:
    """The results file's current content, written back on exit, under an exclusive lock: several
    `vista experiment` processes (e.g. one per core, different --only) can share one results file."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        payload = json.loads(path.read_text()) if path.exists() else {}
        yield payload
        _write(path, payload)


def run_experiment(cfg: ExperimentConfig, *, only: list[str] | None = None, log: Callable[[str], None] = print) -> dict:
    """All runs × seeds (skipping those already in the results file); returns the results payload.

    Each finished (model, seed) is merged into the results file under a lock as soon as it ends, so an
    interrupted experiment resumes and concurrent experiments on one file never drop each other's runs.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    unknown = set(only or []) - {r.name for r in cfg.runs}
    if unknown:
        raise ValueError(f"--only names not in the config: {sorted(unknown)}")
    path = cfg.results_path
    ds = load_dataset(cfg.data)
    split = leave_one_out(encode(ds))
    header = {"experiment": cfg.name, "data": cfg.data,
              "dataset": {"users": len(ds.sequences), "items": len(ds.vocab), "events": ds.num_events,
                          "test_users": len(split.test)},
              "protocol": "leave-one-out; early stopping on validation NDCG@10; full ranking, "
                          + ("seen items excluded" if cfg.exclude_seen else "every item rankable (none masked)"),
              "config": cfg.model_dump()}
    with _locked(path) as payload:
        payload.update(header)
    for spec in cfg.runs:
        if only and spec.name not in only:
            continue
        defaults = {**cfg.defaults.get(spec.kind, {}), **({} if cfg.exclude_seen else {"exclude_seen": False})}
        settings = {"spec": spec.model_dump(), "defaults": defaults}
        with _locked(path) as payload:
            stored = payload.get("models", {}).get(spec.name)
            # results of another configuration (a key missing from the file predates it being stored)
            if stored and any(k in stored and stored[k] != v for k, v in settings.items()):
                log(f"{spec.name}: its spec or defaults changed since the stored runs; they are dropped and rerun")
                del payload["models"][spec.name]
        for seed in cfg.seeds:
            with _locked(path) as payload:
                done = str(seed) in payload.get("models", {}).get(spec.name, {}).get("runs", {})
            if done:
                log(f"{spec.name} seed {seed}: already in {path}, skipped")
                continue
            result = run_one(spec, split, ds.vocab, seed, cfg.run_root / spec.name / f"seed{seed}", defaults, log,
                             cfg.both_protocols)
            with _locked(path) as payload:
                entry = payload.setdefault("models", {}).setdefault(spec.name, {"kind": spec.kind, "runs": {}})
                entry.update(settings)
                entry["runs"][str(seed)] = result
                entry["aggregate"] = aggregate({s: r["test"] for s, r in entry["runs"].items()})
                if cfg.both_protocols:
                    entry["aggregate_other"] = aggregate({s: r["test_other"] for s, r in entry["runs"].items()
                                                          if "test_other" in r})
            log(f"{spec.name} seed {seed}: test NDCG@10 {result['test']['NDCG@10']:.4f} "
                f"HR@10 {result['test']['HR@10']:.4f} ({result['wall_s']}s)")
    return json.loads(path.read_text())


def table(payload: dict, metrics: tuple[str, ...] = ("HR@10", "NDCG@10", "MRR")) -> str:
    """Markdown table of mean ± std per model (the README format), with the mean epochs trained in budget."""
    head = "| model | seeds | epochs | " + " | ".join(metrics) + " |"
    lines = [head, "|" + "---|" * (len(metrics) + 3)]
    for name, entry in payload.get("models", {}).items():
        agg = entry.get("aggregate", {})
        cells = [f"{agg[m]['mean']:.4f} ± {agg[m]['std']:.4f}" if m in agg else "–" for m in metrics]
        epochs = [r["train"]["epochs"] for r in entry.get("runs", {}).values() if "epochs" in r.get("train", {})]
        trained = f"{sum(epochs) / len(epochs):.0f}" if any(epochs) else "–"
        lines.append(f"| {name} | {len(entry.get('runs', {}))} | {trained} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
