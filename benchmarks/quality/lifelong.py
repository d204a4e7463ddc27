"""The lifelong table (issue 20): per model family, the search point its validation chose, tested under both
protocols, beside its serving cost at that history length; the plot of NDCG@10 against events per user, and
the training curves of the chosen runs.

    python -m benchmarks.quality.lifelong RESULTS.json [RESULTS.json ...] [--cost serving_cost.json] [--commit-results]

Each RESULTS.json is a `vista experiment` with `both_protocols: true` whose rows are named FAMILY-lr..-d..
(experiments/synth_lifelong_L*.yaml). Markdown to stdout; the plot to runs/bench/ (benchmarks/quality/results/
with --commit-results).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.output import QUALITY_RESULTS, add_output_args, output_dir  # noqa: E402
from benchmarks.quality.plot import save_figure  # noqa: E402

COST_MODEL = {"most-popular": None, "sasrec-n50": "sasrec-n50", "sasrec-n200": "sasrec-n200",
              "hstu-1024": "hstu-1024", "vista": "vista-lifelong"}


def family(name: str) -> str:
    """The row's model family: its name without the search point (`sasrec-n200-lr0.001-d0.1` -> `sasrec-n200`)."""
    return re.sub(r"-lr[^-]+-d[^-]+$", "", name)


def chosen(payload: dict) -> dict[str, tuple[str, dict]]:
    """Per family, the row with the best validation NDCG@10 (seed 0) and its run."""
    best: dict[str, tuple[str, dict]] = {}
    for name, entry in payload["models"].items():
        run = entry["runs"]["0"]
        val = run["train"].get("best_val", {}).get("NDCG@10", 0.0)
        fam = family(name)
        if fam not in best or val > best[fam][1]["train"].get("best_val", {}).get("NDCG@10", 0.0):
            best[fam] = (name, run)
    return best


def events_per_user(payload: dict) -> int:
    return round(payload["dataset"]["events"] / payload["dataset"]["users"])


def table(payloads: list[dict], cost: dict | None) -> str:
    lines = ["| events / user | model (chosen on validation) | epochs | val NDCG@10 | test NDCG@10 (all rankable) | "
             "HR@10 | test NDCG@10 (seen masked) | HR@10 | serving cost (ms / bytes read) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in payloads:
        length = events_per_user(p)
        for fam, (name, run) in chosen(p).items():
            test, other = run["test"], run.get("test_other", {})
            c = (cost or {}).get("models", {}).get(COST_MODEL.get(fam) or "", {}).get(str(length))
            cost_cell = f"{c['cpu_ms']:.2f} ms / {c['read_bytes']:,} B" if c else "–"
            lines.append(f"| {length:,} | {name} | {run['train'].get('epochs', 0)} | "
                         f"{run['train'].get('best_val', {}).get('NDCG@10', 0.0):.4f} | {test['NDCG@10']:.4f} | "
                         f"{test['HR@10']:.4f} | {other.get('NDCG@10', float('nan')):.4f} | "
                         f"{other.get('HR@10', float('nan')):.4f} | {cost_cell} |")
    return "\n".join(lines)


def plot(payloads: list[dict], out: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    for ax, key, title in ((axes[0], "test", "every item rankable"), (axes[1], "test_other", "seen items masked")):
        series: dict[str, list[tuple[int, float]]] = {}
        for p in sorted(payloads, key=events_per_user):
            for fam, (_, run) in chosen(p).items():
                if key in run:
                    series.setdefault(fam, []).append((events_per_user(p), run[key]["NDCG@10"]))
        for fam, pts in series.items():
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=fam)
        ax.set(xscale="log", xlabel="events per user", ylabel="test NDCG@10", title=f"lifelong world: {title}")
        ax.legend(fontsize=7)
    path = out / "lifelong_length.png"
    return save_figure(fig, path)


def curves(results: Path, payload: dict, out: Path) -> Path:
    """Validation NDCG@10 and training loss against time of each family's chosen run (seed 0)."""
    fig, (val_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for fam, (name, _) in chosen(payload).items():
        log = results.parent / name / "seed0" / "train_log.jsonl"
        recs = [json.loads(x) for x in log.read_text().splitlines() if x.strip()] if log.exists() else []
        if not recs:
            continue
        t = [r["elapsed_s"] for r in recs]
        val_ax.plot(t, [r["val_NDCG@10"] for r in recs], marker=".", label=name)
        loss_ax.plot(t, [r.get("train_loss", float("nan")) for r in recs], marker=".", label=name)
    val_ax.set(xlabel="training time (s)", ylabel="validation NDCG@10", title=payload["experiment"])
    loss_ax.set(xlabel="training time (s)", ylabel="training loss (nats; VISTA: sequence + cut losses)")
    val_ax.legend(fontsize=7)
    path = out / f"curves_{payload['experiment']}.png"
    return save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--cost", type=Path, default=QUALITY_RESULTS / "serving_cost.json")
    add_output_args(parser)
    args = parser.parse_args()
    payloads = [json.loads(p.read_text()) for p in args.results]
    cost = json.loads(args.cost.read_text()) if args.cost.exists() else None
    out = output_dir(args.commit_results, committed=QUALITY_RESULTS)
    print(table(payloads, cost))
    print(f"plot: {plot(payloads, out)}")
    for path, payload in zip(args.results, payloads):
        print(f"curves: {curves(path, payload, out)}")


if __name__ == "__main__":
    main()
