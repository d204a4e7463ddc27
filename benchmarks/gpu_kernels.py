"""Every QLA kernel against the torch path and a plain linear-attention baseline, plus the worker's update.

    python -m benchmarks.gpu_kernels                 # on a GPU: T 1k..64k, fp32 + bf16, JSON + plot
    python -m benchmarks.gpu_kernels --smoke         # no GPU: tiny sizes under Triton's interpreter (path check)

Sections (one JSON row each, median ms over --reps after warm-up, CUDA events on a GPU):
- training form, one user of T positions, H 4, d 16, forward + backward: the torch scan (linear, no decay),
  `chunk_linear_qla` without and with decay (the product default), the fused recurrent kernel (linear with
  decay; and outer phi),
  and a plain causal linear attention in torch (chunked, no phi, no normalizer) as the baseline;
- streaming: `state_update` vs the torch scan for 4,096 users x 4 new events;
- scoring: `target_attention` vs torch SDPA for 256 users x 100 candidates x (32 + 20) tokens;
- the worker's update: `VistaModel.update` on synthetic ragged batches (events/s), torch vs triton backends.
Output: runs/bench/gpu_kernels.json and .png (benchmarks/results/ with --commit-results).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.output import Run, add_output_args, output_file


def _time_ms(fn: Callable[[], object], reps: int, cuda: bool) -> float:
    """Median wall time of fn() in ms after two warm-up calls."""
    import torch

    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _plain_linear_attention(q, k, v, block: int = 64):  # noqa: ANN001, ANN202
    """Baseline: causal linear attention o_t = q_t · sum_{s<=t} k_s^T v_s, chunked, in torch."""
    import torch

    b, t, h, d = q.shape
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))
    state = q.new_zeros(b, h, d, d)
    mask = torch.ones(block, block, device=q.device, dtype=torch.bool).tril()
    outs = []
    for s in range(0, t, block):
        qb, kb, vb = q[:, :, s : s + block], k[:, :, s : s + block], v[:, :, s : s + block]
        c = qb.shape[2]
        outs.append(((qb @ kb.transpose(-1, -2)).masked_fill(~mask[:c, :c], 0) @ vb) + qb @ state)
        state = state + kb.transpose(-1, -2) @ vb
    return torch.cat(outs, dim=2).transpose(1, 2), state


def bench_training(t: int, dtype_name: str, device: str, reps: int) -> list[dict]:
    """Forward + backward of one user's T positions per implementation."""
    import torch

    from kernels.qla import Backend, qla
    from kernels.qla.chunk import chunk_linear_qla
    from kernels.qla.fused_recurrent import fused_recurrent_qla
    from kernels.qla.utils import QLAInputs

    dtype = getattr(torch, dtype_name)
    h, d = 4, 16
    gen = torch.Generator().manual_seed(t)
    q, k, v = (torch.randn(1, t, h, d, generator=gen).to(device, dtype).requires_grad_() for _ in range(3))
    m0 = torch.zeros(1, h, d, d, device=device)
    c0, lengths = torch.zeros(1, device=device), torch.tensor([t], device=device)
    gamma = torch.linspace(0.99, 0.9999, h, device=device)

    def via_qla(backend: Backend, outer_phi: bool, decay: bool) -> Callable[[], object]:
        return lambda: qla(q, k, v, initial_state=m0, initial_count=c0, lengths=lengths, outer_phi=outer_phi,
                           gamma=gamma if decay else None, output_final_state=True, backend=backend)

    impls: dict[str, Callable[[], object]] = {
        "torch_scan_linear": via_qla(Backend.TORCH, False, False),
        "chunk_linear_qla": lambda: chunk_linear_qla(q, k, v, initial_state=m0, initial_count=c0,
                                                     output_final_state=True),
        "torch_scan_linear_decay": via_qla(Backend.TORCH, False, True),
        # Backend.TRITON routes the linear form (with decay: the product default) to the chunked kernels
        "chunk_linear_qla_decay": via_qla(Backend.TRITON, False, True),
        "fused_recurrent_linear_decay": lambda: fused_recurrent_qla(
            QLAInputs(q, k, v, m0, c0, lengths, False, gamma, None)),
        "torch_scan_outer_phi": via_qla(Backend.TORCH, True, False),
        "fused_recurrent_outer_phi": via_qla(Backend.TRITON, True, False),
        "plain_linear_attention_torch": lambda: _plain_linear_attention(q, k, v),
    }
    rows = []
    for name, fwd in impls.items():
        def step() -> None:
            o, final = fwd()
            state = final.state if hasattr(final, "state") else final
            torch.autograd.grad(o.float().pow(2).sum() + state.sum(), (q, k, v))

        row = dict(section="training", impl=name, positions=t, heads=h, d=d, dtype=dtype_name)
        try:
            ms = _time_ms(step, reps, device == "cuda")
            row.update(ms=round(ms, 3), events_per_s=round(t / ms * 1e3))
        except torch.OutOfMemoryError:
            row.update(ms=None, note="out of memory")
            torch.cuda.empty_cache()
        print(row, flush=True)
        rows.append(row)
    return rows


def bench_streaming(users: int, events: int, device: str, reps: int) -> list[dict]:
    """Packed `state_update` vs the torch scan on right-padded rows (forward only, as the worker runs)."""
    import torch

    from kernels.qla import Backend, qla
    from kernels.qla.state_update import state_update

    h, d = 4, 16
    gen = torch.Generator().manual_seed(1)
    lengths = torch.randint(1, 2 * events, (users,), generator=gen)
    total = int(lengths.sum())
    q, k, v = (torch.randn(1, total, h, d, generator=gen).to(device) for _ in range(3))
    m0 = torch.randn(users, h, d, d, generator=gen).to(device)
    c0 = torch.randint(1, 1000, (users,), generator=gen).float().to(device)
    cu = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]).to(device, torch.int32)
    gamma = torch.linspace(0.99, 0.9999, h, device=device)
    t_max = int(lengths.max())
    idx = torch.arange(t_max)[None, :] + cu[:-1].cpu().long()[:, None]
    live = torch.arange(t_max)[None, :] < lengths[:, None]
    idx = torch.where(live, idx, 0).to(device)
    qp, kp, vp = (x[0][idx] for x in (q, k, v))
    rows = []
    with torch.no_grad():
        for name, fn in (
            ("state_update", lambda: state_update(q, k, v, initial_state=m0, initial_count=c0, cu_seqlens=cu,
                                                  gamma=gamma)),
            ("torch_scan_padded", lambda: qla(qp, kp, vp, initial_state=m0, initial_count=c0,
                                              lengths=lengths.to(device), outer_phi=False, gamma=gamma,
                                              output_final_state=True, backend=Backend.TORCH)),
        ):
            ms = _time_ms(fn, reps, device == "cuda")
            row = dict(section="streaming", impl=name, users=users, events=total, ms=round(ms, 3),
                       events_per_s=round(total / ms * 1e3))
            print(row, flush=True)
            rows.append(row)
    return rows


def bench_scoring(users: int, candidates: int, tokens: int, device: str, reps: int) -> list[dict]:
    import torch

    from kernels.target import naive_target_attention
    from kernels.target.fused import target_attention

    h, dh = 4, 16
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(users, h, candidates, dh, generator=gen).to(device)
    k, v = (torch.randn(users, h, tokens, dh, generator=gen).to(device) for _ in range(2))
    mask = (torch.rand(users, tokens, generator=gen) < 0.8).to(device)
    mask[:, 0] = True
    rows = []
    with torch.no_grad():
        for name, fn in (("target_attention", target_attention), ("torch_sdpa", naive_target_attention)):
            ms = _time_ms(lambda fn=fn: fn(q, k, v, mask), reps, device == "cuda")
            row = dict(section="scoring", impl=name, users=users, candidates=candidates, tokens=tokens,
                       ms=round(ms, 3), candidates_per_s=round(users * candidates / ms * 1e3))
            print(row, flush=True)
            rows.append(row)
    return rows


def bench_worker_update(users: int, max_events: int, device: str, reps: int) -> list[dict]:
    """`VistaModel.update` (the worker's and the backfill's model call) on synthetic ragged batches."""
    import torch

    from kernels.qla import Backend
    from models.config import ModelConfig
    from models.state import EventBatch
    from models.vista import VistaModel

    torch.manual_seed(0)
    model = VistaModel(ModelConfig(num_items=10_000)).to(device).eval()
    gen = torch.Generator().manual_seed(3)
    lengths = torch.randint(1, max_events + 1, (users,), generator=gen)
    total = int(lengths.sum())
    items = torch.randint(1, 10_000, (total,), generator=gen)
    stamps = torch.cumsum(torch.randint(0, 100, (total,), generator=gen), 0)
    events = EventBatch(items, torch.zeros_like(items), stamps, lengths)
    states = model.init_state(users)
    rows = []
    for backend in (Backend.TORCH, Backend.TRITON):
        model.backend = backend
        ms = _time_ms(lambda: model.update(states, events), reps, device == "cuda")
        row = dict(section="worker_update", impl=backend.value, users=users, events=total, ms=round(ms, 3),
                   events_per_s=round(total / ms * 1e3))
        print(row, flush=True)
        rows.append(row)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in rows if r["section"] == "training" and r.get("ms")]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, dtype in zip(axes, sorted({r["dtype"] for r in train})):
        for impl in sorted({r["impl"] for r in train}):
            pts = sorted((r["positions"], r["ms"]) for r in train if r["impl"] == impl and r["dtype"] == dtype)
            ax.plot(*zip(*pts), marker="o", label=impl)
        ax.set(xscale="log", yscale="log", xlabel="positions T (one user, H 4, d 16)",
               ylabel="forward + backward ms (median)", title=dtype)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="1024,4096,16384,65536")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="no GPU: tiny sizes under the Triton interpreter")
    parser.add_argument("--out", default=None, help="JSON path (default: gpu_kernels.json in the output folder)")
    add_output_args(parser)
    args = parser.parse_args()
    run = Run()
    out = output_file("gpu_kernels_smoke.json" if args.smoke else "gpu_kernels.json", args.commit_results,
                      out=args.out)
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before any kernel module is imported
    import torch

    cuda = torch.cuda.is_available() and not args.smoke
    if not cuda and not args.smoke:
        raise SystemExit("no CUDA device: run with --smoke for a path check under the Triton interpreter")
    device = "cuda" if cuda else "cpu"
    reps = args.reps if cuda else 1
    lengths = [int(x) for x in args.lengths.split(",")] if cuda else [40]
    rows: list[dict] = []
    for dtype in args.dtypes.split(","):
        for t in lengths:
            rows += bench_training(t, dtype, device, reps)
    rows += bench_streaming(4096 if cuda else 8, 4, device, reps)
    rows += bench_scoring(256 if cuda else 2, 100 if cuda else 5, 52, device, reps)
    rows += bench_worker_update(2048 if cuda else 4, 16 if cuda else 3, device, reps)
    result = dict(meta=run.metadata(), torch=torch.__version__, args=vars(args),
                  gpu=torch.cuda.get_device_name() if cuda else None, rows=rows,
                  note=None if cuda else "smoke run under the Triton interpreter: timings mean nothing")
    out.write_text(json.dumps(result, indent=2))
    plot(rows, out.with_suffix(".png"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
