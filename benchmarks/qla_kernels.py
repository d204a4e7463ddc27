"""QLA forward: Backend.TORCH (scan) vs Backend.TRITON (fused recurrent kernel) on CUDA.

    python -m benchmarks.qla_kernels [--shapes 256x1,4096x1,256x64,4096x64,256x1024,1024x1024] [--decay]
    python -m benchmarks.qla_kernels --interpret     # no GPU: exercise the script under Triton's interpreter

Shapes are users x positions (B x T) at H 4, d 16, fp32, ragged lengths in [1, T] (the stream worker's
update: many users, few new events each; the backfill: long chunks). Per shape: median milliseconds of
each backend, events/s, and the relative error between them. Without CUDA, no timing is taken (the
interpreter's CPU timings mean nothing) and the JSON records that; `--interpret` runs tiny shapes
only to prove the path. Output: runs/bench/qla_kernels.json (+ .png when timed on a GPU;
qla_kernels_interpret.json with `--interpret`), in benchmarks/results/ with `--commit-results`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from benchmarks.output import Run, add_output_args, output_file


def _time_ms(fn, reps: int, cuda: bool) -> float:
    """Median wall time of fn() in ms after warm-up (CUDA events on a GPU)."""
    import torch

    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench_shape(b: int, t: int, heads: int, d: int, decay: bool, device: str, reps: int) -> dict:
    import torch

    from kernels.qla import Backend, qla

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(b, t, heads, d, generator=gen).to(device) for _ in range(3))
    lengths = torch.randint(1, t + 1, (b,), generator=gen).to(device)
    kw = dict(initial_state=torch.randn(b, heads, d, d, generator=gen).to(device),
              initial_count=torch.randint(0, 100, (b,), generator=gen).float().to(device), lengths=lengths,
              gamma=torch.linspace(0.99, 0.9999, heads, device=device) if decay else None, output_final_state=True)
    row: dict = dict(users=b, positions=t, events=int(lengths.sum()), heads=heads, d=d, decay=decay)
    finals = {}
    for backend in (Backend.TORCH, Backend.TRITON):
        try:
            with torch.no_grad():
                _, finals[backend] = qla(q, k, v, backend=backend, **kw)
                ms = _time_ms(lambda: qla(q, k, v, backend=backend, **kw), reps, device == "cuda")
            row[f"{backend.value}_ms"] = round(ms, 4)
            row[f"{backend.value}_events_per_s"] = round(row["events"] / ms * 1e3)
        except torch.OutOfMemoryError:
            row[f"{backend.value}_ms"] = None
            torch.cuda.empty_cache()
    if len(finals) == 2:
        got, ref = finals[Backend.TRITON].state.double(), finals[Backend.TORCH].state.double()
        row["rel_err_final_state"] = float((got - ref).norm() / ref.norm())
    return row


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['users']}x{r['positions']}" for r in rows]
    xs = range(len(rows))
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, name in enumerate(("torch", "triton")):
        ax.bar([x + 0.4 * i for x in xs], [r.get(f"{name}_ms") or 0 for r in rows], width=0.4, label=name)
    ax.set_xticks([x + 0.2 for x in xs], labels)
    ax.set_yscale("log")
    ax.set_xlabel("users x positions (H 4, d 16, fp32)")
    ax.set_ylabel("forward ms (median)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="256x1,4096x1,256x64,4096x64,256x1024,1024x1024")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--d", type=int, default=16)
    parser.add_argument("--decay", action="store_true")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--interpret", action="store_true", help="no GPU: tiny shapes under the Triton interpreter")
    add_output_args(parser)
    args = parser.parse_args()
    run = Run()
    out = output_file("qla_kernels_interpret.json" if args.interpret else "qla_kernels.json", args.commit_results)
    if args.interpret:
        os.environ["TRITON_INTERPRET"] = "1"  # before the kernel module is imported (by the first qla call)
    import torch

    cuda = torch.cuda.is_available() and not args.interpret
    result: dict = dict(meta=run.metadata(), torch=torch.__version__, args=vars(args))
    if not cuda and not args.interpret:
        result.update(gpu=None, rows=[], note="no CUDA device: no timings taken (run on a GPU machine)")
        result["meta"] = run.metadata()
        out.write_text(json.dumps(result, indent=2))
        print(f"no CUDA device: nothing timed; wrote {out}")
        return
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    if args.interpret:
        shapes = [(4, 1), (4, 16)]
        result.update(gpu=None, note="Triton interpreter on CPU: timings are meaningless, path check only")
    else:
        result.update(gpu=torch.cuda.get_device_name())
    rows = []
    for b, t in shapes:
        row = bench_shape(b, t, args.heads, args.d, args.decay, "cuda" if cuda else "cpu",
                          args.reps if cuda else 2)
        print(row)
        rows.append(row)
    result["rows"] = rows
    result["meta"] = run.metadata()  # load average at the end
    out.write_text(json.dumps(result, indent=2))
    if cuda:
        plot(rows, out.with_suffix(".png"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
