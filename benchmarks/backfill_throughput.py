"""Backfill throughput: events/s of the summarization alone and end-to-end with Cassandra writes, peak memory.

    python -m benchmarks.backfill_throughput [--datasets ml100k,beauty,synthetic] [--modes summarize,end_to_end]
                                             [--synthetic-events 10000000] [--max-history 1000000] [--shards 1,2]

Every run uses the default model (ModelConfig defaults, the general preset: D 64, H 4, L 2, no seeds), untrained, over
the dataset's items, and goes through `stream.backfill.run_backfill` exactly as `vista backfill` does:
  summarize   rows kept in a dict (tests.fakes.MemoryStore): parsing + apply_events (model.update and
              summarize over many users at once) + row encoding, no I/O;
  end_to_end  rows written to the real Cassandra (SummaryStore, concurrent) and progress checkpointed in
              backfill_progress, under a fresh model_version.
Each run is a child process, so its peak RSS (getrusage ru_maxrss) is its own.

The synthetic log (MovieLens format, never committed) has lifelong users: one with `--max-history`
events, then tiers of shorter histories, written user after user (an archive exported per user). It is
written into a temporary folder and removed at the end, unless `--synthetic-path` names a file to keep
(and reuse, when it exists). Results: JSON (rewritten after every run) and a PNG under runs/bench/
(benchmarks/results/ with `--commit-results`; `--out FILE` for another place).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.output import Run, add_output_args, output_file

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
DATASETS = {"ml100k": DATA / "ml-100k" / "u.data", "beauty": DATA / "amazon-beauty" / "interactions.csv"}
SYNTH_ITEMS = 20_000


def synthetic_tiers(total: int, max_history: int) -> list[tuple[int, int]]:
    """(users, events each): one user with max_history, then tiers of 10x shorter histories, each tier
    holding a similar share of the events, the rest in 90-event users."""
    tiers = [(1, max_history)]
    left = total - max_history
    length = max_history // 10
    while length >= 1000 and left > 0:
        users = max(1, int(min(left, total * 0.2) // length))
        tiers.append((users, length))
        left -= users * length
        length //= 10
    if left > 0:
        tiers.append((-(-left // 90), 90))  # rounded up: at least `total` events
    return tiers


def write_synthetic(path: Path, total: int, max_history: int, seed: int = 0) -> dict:
    """A u.data-format log of >= `total` events; returns its description."""
    import numpy as np

    rng = np.random.default_rng(seed)
    tiers = synthetic_tiers(total, max_history)
    events = users = 0
    tmp = path.with_suffix(".partial")
    try:
        with tmp.open("w") as fh:
            for count, length in tiers:
                for _ in range(count):
                    users += 1
                    items = np.minimum(rng.zipf(1.3, length), SYNTH_ITEMS)
                    actions = rng.integers(1, 6, length)
                    stamps = 1_000_000_000 + np.cumsum(rng.integers(0, 3600, length))
                    fh.write("".join(f"{users}\t{i}\t{a}\t{t}\n" for i, a, t in zip(items.tolist(),
                                                                                   actions.tolist(),
                                                                                   stamps.tolist())))
                    events += length
        tmp.rename(path)
    finally:
        tmp.unlink(missing_ok=True)  # an interrupted write leaves nothing behind
    return {"users": users, "events": events, "tiers": tiers}


def _items_of(name: str, path: Path) -> list[str]:
    if name == "synthetic":
        return [str(i) for i in range(1, SYNTH_ITEMS + 1)]
    from schemas.interactions import read_interactions

    return list(dict.fromkeys(r[1] for r in read_interactions(path)))


def run_one(name: str, path: Path, mode: str, chunk_events: int, cache_mb: float,
            time_limit: float | None = None, shards: int = 1, shard: int = 0, threads: int | None = None) -> dict:
    """One backfill (or one shard of it) in this process (called in a child); returns its measurements."""
    import resource

    import torch

    if threads:
        torch.set_num_threads(threads)

    from models.checkpoint import load_checkpoint, save_checkpoint
    from models.config import ModelConfig
    from models.vista import VistaModel
    from models.vocab import ItemVocab
    from stream.backfill import BackfillSettings, run_backfill
    from stream.sources import FileSource
    from tests.fakes import MemoryProgress, MemoryStore

    torch.manual_seed(uuid.uuid4().int % 2**31)  # a model_version of its own: rows of runs never mix
    vocab = ItemVocab.build(_items_of(name, path), oov_buckets=64)
    with tempfile.TemporaryDirectory() as ckpt:
        save_checkpoint(ckpt, VistaModel(ModelConfig(num_items=len(vocab))).eval(), vocab)
        model, vocab, meta = load_checkpoint(ckpt)
    cfg = BackfillSettings(chunk_events=chunk_events, cache_mb=cache_mb, progress_bar=shards == 1, shards=shards,
                           shard=shard)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    session = None
    if mode == "summarize":
        store, progress = MemoryStore(), MemoryProgress()
    else:
        from infra.cassandra import connect
        from infra.settings import InfraSettings
        from stream.store import ProgressStore, SummaryStore

        session = connect(InfraSettings())
        store, progress = SummaryStore(session), ProgressStore(session)
    try:
        report = run_backfill(model, vocab, meta["model_version"], FileSource(path), store, progress, settings=cfg,
                              max_seconds=time_limit)
    finally:
        if session is not None:
            session.cluster.shutdown()
    return {
        "dataset": name, "mode": mode, "shards": shards, "shard": shard, "complete": report.status == "done",
        "events": report.events,
        "users": report.users, "chunks": report.chunks,
        "seconds": round(report.seconds, 2), "events_per_s": round(report.events_per_s),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_after_setup_mb": round(rss_before), "timings": report.timings, "bad": report.bad,
        "out_of_order": report.out_of_order, "chunk_events": chunk_events, "cache_mb": cache_mb,
        "model": {"dim": model.cfg.dim, "heads": model.cfg.heads, "layers": model.cfg.layers,
                  "seeds": model.cfg.num_seeds, "recent": model.cfg.recent, "items": len(vocab)},
        "torch_threads": torch.get_num_threads(),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),  # the machine is shared: read numbers with it
    }


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [f"{r['dataset']}\n{r['mode']}" + (f"\n{r['shards']} shards" if r.get("shards", 1) > 1 else "")
              for r in results]
    ax1.bar(labels, [r["events_per_s"] for r in results], color=["tab:blue" if r["mode"] == "summarize" else
                                                                  "tab:orange" for r in results])
    ax1.set_ylabel("events / s")
    ax1.set_yscale("log")
    ax1.set_title("backfill throughput (default model size, CPU)")
    ax2.bar(labels, [r["peak_rss_mb"] for r in results], color="tab:gray")
    ax2.set_ylabel("peak RSS (MiB)")
    ax2.set_title("peak memory")
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="ml100k,beauty,synthetic")
    ap.add_argument("--modes", default="summarize,end_to_end")
    ap.add_argument("--synthetic-events", type=int, default=10_000_000)
    ap.add_argument("--max-history", type=int, default=1_000_000)
    ap.add_argument("--synthetic-path", type=Path, default=None,
                    help="keep the synthetic log in this file (reused if it exists); default: a temporary file, "
                         "removed at the end")
    ap.add_argument("--chunk-events", type=int, default=262_144)
    ap.add_argument("--shards", default="1", help="comma-separated shard counts to run (e.g. 1,2): N shards are N "
                    "concurrent processes of one torch thread each, every one reading the whole log")
    ap.add_argument("--cache-mb", type=float, default=256.0)
    ap.add_argument("--time-limit", type=float, default=None,
                    help="stop each run after this many seconds (at a checkpoint; reported as complete=false)")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON file (PNG beside it); default: backfill_throughput.json in runs/bench/")
    add_output_args(ap)
    ap.add_argument("--one", nargs=2, metavar=("DATASET", "MODE"), help=argparse.SUPPRESS)
    ap.add_argument("--shard", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.one:
        result = run_one(args.one[0], args.path, args.one[1], args.chunk_events, args.cache_mb, args.time_limit,
                         int(args.shards), args.shard, args.threads)
        print("RESULT " + json.dumps(result), flush=True)
        return

    run = Run()
    out = output_file("backfill_throughput.json", args.commit_results, out=args.out)
    with tempfile.TemporaryDirectory(prefix="vista-backfill-") as tmp:
        _run_all(args, out, run, Path(tmp))


def _run_all(args: argparse.Namespace, out: Path, run: Run, tmp: Path) -> None:
    """Every dataset x mode in a child process; the JSON rewritten after each, the PNG at the end."""
    paths = dict(DATASETS)
    synth_info = None
    if "synthetic" in args.datasets.split(","):
        synth = args.synthetic_path or tmp / f"synth-{args.synthetic_events}-{args.max_history}.data"
        if not synth.exists():
            t0 = time.perf_counter()
            synth_info = write_synthetic(synth, args.synthetic_events, args.max_history)
            synth_info["write_seconds"] = round(time.perf_counter() - t0, 1)
            print(f"synthetic log: {synth_info} -> {synth}", file=sys.stderr)
        paths["synthetic"] = synth
    payload = {"meta": run.metadata(), "synthetic": synth_info, "runs": []}
    for name in args.datasets.split(","):
        for mode in args.modes.split(","):
            for shards in map(int, args.shards.split(",")):
                result = _run_shards(args, name, mode, paths[name], shards)
                payload["runs"].append(result)
                keys = ("dataset", "mode", "shards", "complete", "events", "users", "seconds", "events_per_s",
                        "peak_rss_mb")
                print(json.dumps({k: result[k] for k in keys}), flush=True)
                payload["meta"] = run.metadata()  # load "end": as of the last run written
                out.write_text(json.dumps(payload, indent=2))
    plot(payload["runs"], out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


def _run_shards(args: argparse.Namespace, name: str, mode: str, path: Path, shards: int) -> dict:
    """One child process (torch's default threads), or `shards` concurrent children of one thread each;
    their figures combined: events summed over the wall time of the slowest shard."""
    procs = []
    for shard in range(shards):
        cmd = [sys.executable, "-m", "benchmarks.backfill_throughput", "--one", name, mode, "--path", str(path),
               "--chunk-events", str(args.chunk_events), "--cache-mb", str(args.cache_mb), "--shards", str(shards),
               "--shard", str(shard)]
        if shards > 1:
            cmd += ["--threads", "1"]
        if args.time_limit:
            cmd += ["--time-limit", str(args.time_limit)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1]))
    results = []
    for proc in procs:
        stdout, _ = proc.communicate()
        line = next((x for x in stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            raise SystemExit(f"{name}/{mode} ({shards} shards) failed (exit {proc.returncode}):\n{stdout[-2000:]}")
        results.append(json.loads(line[len("RESULT "):]))
    if shards == 1:
        return results[0]
    seconds = max(r["seconds"] for r in results)
    events = sum(r["events"] for r in results)
    return {"dataset": name, "mode": mode, "shards": shards, "complete": all(r["complete"] for r in results),
            "events": events, "users": sum(r["users"] for r in results), "seconds": seconds,
            "events_per_s": round(events / seconds) if seconds else 0,
            "peak_rss_mb": sum(r["peak_rss_mb"] for r in results), "per_shard": results}


if __name__ == "__main__":
    main()
