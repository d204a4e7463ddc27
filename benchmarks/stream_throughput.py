"""End-to-end stream-worker throughput: produce -> worker -> Cassandra acknowledged (offsets committed).

    python -m benchmarks.stream_throughput --batch-sizes 1000,5000,20000 [--copies 2] [--mode prefill|live]

For each batch size: a fresh topic and consumer group and a fresh untrained model of `--preset` (default
general: D 64, the stack alone, no seeds) over the dataset's items; the events are either produced before the worker starts
(`prefill`: the worker's sustained capacity, draining a backlog) or while it runs (`live`: producer and
worker share the machine). Throughput = events / (last commit - first record seen). Reports where the
worker's time goes (stage totals) and the consumer lag over time; JSON + PNG under runs/bench/
(benchmarks/results/ with `--commit-results`).
`--copies k` replays the dataset k times under distinct user prefixes (k x the users, same order).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import threading
import time
import uuid
from pathlib import Path

from benchmarks.output import Run, add_output_args, output_file

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ml-100k" / "u.data"


def _events(data: Path, copies: int, limit: int | None):
    from schemas.events import InteractionEvent
    from stream.producer import load_events

    base = load_events(data, limit)
    if copies == 1:
        return base
    return [InteractionEvent(user_id=f"c{c}-{e.user_id}", item_id=e.item_id, action=e.action, timestamp=e.timestamp)
            for e in base for c in range(copies)]


def _checkpoint(directory: Path, items: list[str], preset: str, dim: int) -> str:
    import torch

    from models.checkpoint import save_checkpoint
    from models.preset import build_configs
    from models.vista import VistaModel
    from models.vocab import ItemVocab

    torch.manual_seed(uuid.uuid4().int % 2**31)  # a model_version (hence rows) of its own
    vocab = ItemVocab.build(items, oov_buckets=64)
    model = VistaModel(build_configs(preset, len(vocab), model={"dim": dim})[0])
    return save_checkpoint(directory, model.eval(), vocab)


def run_one(settings, events, batch_size: int, batch_ms: int, partitions: int, mode: str, ckpt: Path,
            threads: int | None) -> dict:
    from infra.kafka import ensure_topics
    from stream.producer import make_event_producer, send_events
    from stream.worker import Worker, WorkerConfig

    tag = uuid.uuid4().hex[:8]
    topic, group = f"bench-events-{tag}", f"bench-group-{tag}"
    ensure_topics(settings, {topic: partitions})
    produce_s = None

    def produce() -> None:
        nonlocal produce_s
        producer = make_event_producer(settings)
        t0 = time.perf_counter()
        send_events(producer, topic, events)
        produce_s = time.perf_counter() - t0
        producer.close()

    if mode == "prefill":
        produce()
    worker = Worker(WorkerConfig(ckpt=ckpt, topic=topic, dlq_topic=f"bench-dlq-{tag}", group_id=group,
                                 batch_max_events=batch_size, batch_max_ms=batch_ms, torch_threads=threads,
                                 cold_start=True, metrics_port=0),
                    settings)
    thread = threading.Thread(target=worker.run, daemon=True)
    samples: list[dict] = []
    total = len(events)
    t_start = time.perf_counter()
    thread.start()
    producer_thread = None
    if mode == "live":
        producer_thread = threading.Thread(target=produce, daemon=True)
        producer_thread.start()
    t_first = None
    while True:
        done = sum(worker.committed.values())
        lag = {str(tp.partition): v for tp, v in ((tp, worker.metrics.lag.labels(str(tp.partition))._value.get())
                                                   for tp in list(worker.committed))}
        now = time.perf_counter()
        if t_first is None and worker.stage_seconds.get("decode", 0) > 0:
            t_first = now
        samples.append({"t": round(now - t_start, 3), "committed": done, "lag": lag})
        if done >= total:
            break
        if not thread.is_alive():
            raise RuntimeError("worker stopped early")
        time.sleep(0.1)
    t_end = time.perf_counter()
    worker.stop()
    thread.join(60)
    if producer_thread is not None:
        producer_thread.join(60)
    stages = {k: round(v, 3) for k, v in sorted(worker.stage_seconds.items(), key=lambda kv: -kv[1])}
    busy = sum(worker.stage_seconds.values())  # poll = waiting for and fetching records from Kafka
    elapsed = t_end - (t_first if mode == "prefill" and t_first else t_start)
    return {
        "batch_size": batch_size, "mode": mode, "events": total, "users": len({e.user_id for e in events}),
        "partitions": partitions, "seconds": round(elapsed, 3), "events_per_s": round(total / elapsed),
        "produce_seconds": round(produce_s, 3) if produce_s else None,
        "produce_events_per_s": round(total / produce_s) if produce_s else None,
        "batches": int(worker.metrics.batches._value.get()),
        "stage_seconds": stages,
        "stage_share": {k: round(v / busy, 3) for k, v in worker.stage_seconds.items()},
        "lag_samples": samples,
    }


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 4.8))
    labels = [f"{r['batch_size']}\n{r['mode']}" for r in results]
    ax1.bar(labels, [r["events_per_s"] for r in results], color="tab:blue")
    ax1.axhline(50_000, color="red", linestyle="--", label="target 50k/s")
    ax1.set_title("events/s (committed = written to Cassandra)")
    ax1.set_xlabel("batch size / mode")
    ax1.legend()
    stages = [s for s in ("poll", "decode", "read", "decode_state", "update", "summarize", "encode", "write", "commit",
                          "dlq", "apply_other") if any(s in r["stage_seconds"] for r in results)]
    bottom = [0.0] * len(results)
    for s in stages:
        vals = [r["stage_seconds"].get(s, 0.0) / sum(r["stage_seconds"].values()) for r in results]
        ax2.bar(labels, vals, bottom=bottom, label=s)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax2.set_title("share of worker time per stage (poll = Kafka fetch)")
    ax2.legend(fontsize=7, loc="upper right")
    for r in results:
        ax3.plot([s["t"] for s in r["lag_samples"]], [r["events"] - s["committed"] for s in r["lag_samples"]],
                 label=f"batch {r['batch_size']} ({r['mode']})")
    ax3.set_title("uncommitted events (total consumer lag) over time")
    ax3.set_xlabel("seconds since worker start")
    ax3.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--copies", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-sizes", default="1000,5000,20000")
    parser.add_argument("--batch-ms", type=int, default=200)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--mode", choices=("prefill", "live"), default="prefill")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--preset", default="general", help="model preset (models/presets/)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="stream_throughput", help="file name stem of <out>.json and <out>.png")
    parser.add_argument("--replot", action="store_true", help="only redraw <out>.png from <out>.json")
    add_output_args(parser)
    args = parser.parse_args()
    run = Run()
    out = output_file(f"{args.out}.json", args.commit_results)
    logging.basicConfig(level=logging.WARNING)

    if args.replot:
        plot(json.loads(out.read_text())["results"], out.with_suffix(".png"))
        return
    from infra.settings import load_settings

    settings = load_settings()
    events = _events(args.data, args.copies, args.limit)
    items = list(dict.fromkeys(e.item_id for e in events))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in [int(s) for s in args.batch_sizes.split(",")]:
            ckpt = Path(tmp) / f"ckpt-{size}"
            _checkpoint(ckpt, items, args.preset, args.dim)
            r = run_one(settings, events, size, args.batch_ms, args.partitions, args.mode, ckpt, args.threads)
            print(json.dumps({k: v for k, v in r.items() if k != "lag_samples"}))
            results.append(r)
    meta = run.metadata() | {"args": vars(args) | {"data": str(args.data)},
                             "model": {"preset": args.preset, "dim": args.dim}}
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=str))
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out} and .png")


if __name__ == "__main__":
    main()
