"""Serving cost per request beside quality (issue 20): what each model reads and computes to rank 100
candidates for one user, as the history grows.

    python -m benchmarks.quality.serving_cost [--lengths 100,1000,10000] [--commit-results]

Per model and history length L, on one CPU thread, median over `--reps` requests after warm-up:
- VISTA (`general` preset): the stored summary row is read (its bytes, which do not depend on L) and
  u·e is computed for the candidates; `lifelong` (the memory readout) reads the state blob too and adds each
  candidate's read of M^l/n. The per-event update cost is paid once per event by the worker, never per
  request (`benchmarks/update_cost.py`).
- SASRec (window 50 and 200) and HSTU-style (max_len 1,024; and uncapped, the full history, as long as it
  fits): the last min(L, window) item ids are read (8 bytes each) and the model encodes them per request,
  then scores the candidates against the last position.
Untrained models: cost depends on shapes only. JSON to runs/bench/ (benchmarks/quality/results/ with
--commit-results).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from benchmarks.output import QUALITY_RESULTS, Run, add_output_args, output_file

NUM_ITEMS = 20_000
CANDIDATES = 100
ID_BYTES = 8


def _median_ms(fn, reps: int) -> float:  # noqa: ANN001
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def windowed_cost(model, window: int | None, length: int, cands, reps: int) -> dict:  # noqa: ANN001
    """A windowed baseline: encode the last min(L, window) items, score the candidates at the last position."""
    import torch

    seen = length if window is None else min(length, window)
    items = torch.randint(1, NUM_ITEMS + 1, (1, seen))

    def request() -> None:
        with torch.no_grad():
            h = model.encode(items)[:, -1]
            (model.item(cands) @ h[0]).topk(10)

    return {"history_seen": seen, "read_bytes": seen * ID_BYTES, "cpu_ms": _median_ms(request, reps)}


def vista_cost(length: int, cands, reps: int, preset: str = "general") -> dict:
    """Score from the stored row as the scorer does (decode, summary, logits): its size is fixed; L only changed
    the state the worker kept. `general` reads the summary (u); `lifelong` also the state blob, for the memory
    readout."""
    import torch

    from models.preset import build_configs
    from models.vista import VistaModel
    from stream.rows import rows_from_states, summary_from_rows

    model_cfg, _ = build_configs(preset, num_items=NUM_ITEMS + 1)
    model = VistaModel(model_cfg).eval()
    state = model.init_state(1)
    with torch.no_grad():
        row = rows_from_states(["u"], "v", state, model.summarize(state))[0]
    read_bytes = (len(row.recent_h or b"") + len(row.recent_items or b"") + len(row.seeds or b"")
                  + (len(row.state) if model_cfg.memory_readout else 0))

    def request() -> None:
        with torch.no_grad():
            summary = summary_from_rows([row], model)
            summary.recent_h = summary.recent_h.float()
            model.score(summary, cands).topk(10)

    return {"history_seen": length, "read_bytes": read_bytes, "cpu_ms": _median_ms(request, reps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", default="100,1000,10000")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--full-cap", type=int, default=10_000, help="longest uncapped HSTU-style history tried")
    add_output_args(parser)
    args = parser.parse_args()

    import torch

    from models.baselines.hstu import HSTU, HSTUConfig
    from models.baselines.sasrec import SASRec, SASRecConfig

    torch.set_num_threads(1)
    torch.manual_seed(0)
    run = Run()
    cands = torch.randint(1, NUM_ITEMS + 1, (CANDIDATES,))
    lengths = [int(x) for x in args.lengths.split(",")]
    models = {
        "sasrec-n50": (SASRec(SASRecConfig(num_items=NUM_ITEMS, max_len=50)).eval(), 50),
        "sasrec-n200": (SASRec(SASRecConfig(num_items=NUM_ITEMS, max_len=200)).eval(), 200),
        "hstu-1024": (HSTU(HSTUConfig(num_items=NUM_ITEMS, max_len=1024)).eval(), 1024),
        "hstu-full": (HSTU(HSTUConfig(num_items=NUM_ITEMS, max_len=max(lengths))).eval(), None),
    }
    rows: dict[str, dict[int, dict]] = {"vista": {n: vista_cost(n, cands, args.reps) for n in lengths},
                                        "vista-lifelong": {n: vista_cost(n, cands, args.reps, "lifelong")
                                                           for n in lengths}}
    for name, (model, window) in models.items():
        rows[name] = {n: windowed_cost(model, window, n, cands, args.reps) for n in lengths
                      if window is not None or n <= args.full_cap}
    out = output_file("serving_cost.json", args.commit_results, committed=QUALITY_RESULTS)
    out.write_text(json.dumps({"meta": run.metadata(), "candidates": CANDIDATES, "threads": 1, "models": rows},
                              indent=2))
    print(f"{'model':<12}" + "".join(f"  L={n:<8} ms / bytes read" for n in lengths))
    for name, per in rows.items():
        print(f"{name:<12}" + "".join(f"  {per[n]['cpu_ms']:8.2f} / {per[n]['read_bytes']:<9}" if n in per else
                                      f"  {'-':>8}   {'':<9}" for n in lengths))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
