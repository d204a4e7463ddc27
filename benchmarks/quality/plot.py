"""Quality report from harness results: markdown tables, a summary JSON, and two plots.

    python -m benchmarks.quality.plot runs/experiments/*/results.json [--commit-results | --out DIR]

Writes into runs/bench/ by default, into benchmarks/quality/results/ with `--commit-results`. `summary.json`
holds the aggregates per experiment and, under `_meta`, when and where this report was drawn (the
experiments' own machines are in their results JSON).

- `curves_<experiment>.png`: validation NDCG@10 vs training time, seed 0 of every model (from train_log.jsonl).
- `synth_length.png`: test NDCG@10 (mean ± std over seeds) vs events per user, over the synth_* experiments
  (one line per world and model run at two or more lengths).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.output import QUALITY_RESULTS, Run, add_output_args, output_dir  # noqa: E402
from models.training.harness import table  # noqa: E402


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Write a finished figure (tight layout, 120 dpi), close it, return where it went."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def training_curves(results: Path, payload: dict, out: Path) -> Path | None:
    run_root = results.parent
    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = False
    for name in payload.get("models", {}):
        log = run_root / name / "seed0" / "train_log.jsonl"
        if not log.exists() or not log.read_text().strip():
            continue
        recs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        ax.plot([r["elapsed_s"] for r in recs], [r["val_NDCG@10"] for r in recs], marker=".", label=name)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set(xlabel="training time (s)", ylabel="validation NDCG@10", title=f"{payload['experiment']}: seed 0")
    ax.legend(fontsize=7)
    path = out / f"curves_{payload['experiment']}.png"
    return save_figure(fig, path)


def synth_plot(payloads: list[dict], out: Path, metric: str = "NDCG@10") -> Path | None:
    synth = sorted((p for p in payloads if p["experiment"].startswith("synth")),
                   key=lambda p: p["dataset"]["events"] / p["dataset"]["users"])
    if not synth:
        return None
    # one line per (world, model): the world is the experiment name without its length (synth_S300 -> synth_S)
    world_of = {p["experiment"]: re.sub(r"\d+", "", p["experiment"]) for p in synth}
    several = len(set(world_of.values())) > 1
    series: dict[str, list[tuple[float, float, float]]] = {}
    for p in synth:
        length = p["dataset"]["events"] / p["dataset"]["users"]
        world = world_of[p["experiment"]]
        for name, entry in p["models"].items():
            if metric in entry.get("aggregate", {}):
                agg = entry["aggregate"][metric]
                label = f"{name} ({world})" if several else name
                series.setdefault(label, []).append((length, agg["mean"], agg["std"]))
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, pts in series.items():
        if len(pts) < 2:  # a row run at one length only (an ablation) is in the tables, not a line
            continue
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3,
                    label=name)
    ax.set(xscale="log", xlabel="events per user", ylabel=f"test {metric}", title="lifelong synthetic users")
    ax.legend(fontsize=7)
    path = out / "synth_length.png"
    return save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="folder to write into; default: runs/bench/")
    add_output_args(parser)
    args = parser.parse_args()
    run = Run()
    out = output_dir(args.commit_results, committed=QUALITY_RESULTS, out=args.out)
    payloads, summary = [], {}
    for path in args.results:
        payload = json.loads(path.read_text())
        payloads.append(payload)
        summary[payload["experiment"]] = {"dataset": payload["dataset"],
                                          "models": {n: e.get("aggregate", {}) for n, e in payload["models"].items()}}
        print(f"### {payload['experiment']} ({payload['dataset']})\n\n{table(payload)}\n")
        curve = training_curves(path, payload, out)
        if curve:
            print(f"curves: {curve}")
    synth = synth_plot(payloads, out)
    if synth:
        print(f"synthetic: {synth}")
    (out / "summary.json").write_text(json.dumps({"_meta": run.metadata()} | summary, indent=2))
    print(f"wrote {out / 'summary.json'}")


if __name__ == "__main__":
    main()
