"""Seconds per VISTA training step (loss + backward + AdamW) on one thread, per training variant.

The wall-clock budget decides how many epochs each model gets, so the cost of each part of VISTA's loss
(sequence readout, cut-point target attention over the whole catalog or sampled negatives, reconstruction)
is what decides where its time goes. Writes `runs/bench/vista_step_time.json`
(`benchmarks/quality/results/vista_step_time.json` with `--commit-results`; `--out FILE` for another place).

    python -m benchmarks.quality.vista_step_time --steps 12
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch

from benchmarks.output import QUALITY_RESULTS, Run, add_output_args, output_file
from models.preset import build_configs
from models.training.budget import NegativeSampler, length_buckets
from models.training.data import encode, leave_one_out, load_dataset
from models.training.trainer import train_step
from models.vista import VistaModel

# (preset, model overrides, train overrides); train: the trainer's per-step choice follows cut_every
VARIANTS: dict[str, tuple[str, dict, dict]] = {
    "general preset (QLA stack alone, linear attention)": ("general", {}, {}),
    "stack alone, outer phi on": ("general", {"outer_phi": True}, {}),
    "target preset (cut losses on every 4th step)": ("target", {}, {}),
    "target, cut losses on every step (full-catalog cut loss)": ("target", {}, {"cut_every": 1}),
    "target, no reconstruction loss": ("target", {}, {"lambda_rec": 0.0}),
    "target, cut loss vs 256 sampled negatives": ("target", {}, {"cut_negatives": 256, "cut_every": 1}),
    "target, one target-attention layer": ("target", {"target_layers": 1}, {}),
}


def step_seconds(split, num_items: int, preset: str, model_kw: dict, train_kw: dict, steps: int
                 ) -> tuple[float, int]:
    """Mean seconds per optimizer step (the trainer's own `train_step`) over the first `steps` batches, and
    the batches in one epoch."""
    torch.manual_seed(0)
    cfg, tcfg = build_configs(preset, num_items, model=model_kw, train=train_kw)
    model = VistaModel(cfg).train()
    gen = torch.Generator().manual_seed(0)
    train = [s for s in split.train if len(s) >= 2]
    sampler = NegativeSampler(train, num_items, gen)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr)
    batches = length_buckets(train, tcfg.batch_size, random.Random(0))
    start = time.perf_counter()
    for i, batch in enumerate(batches[:steps]):
        train_step(model, batch, sampler, tcfg, num_items, gen, opt, with_cut=i % tcfg.cut_every == 0)
    return (time.perf_counter() - start) / min(steps, len(batches)), len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/ml-100k/u.data")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--out", default=None, help="JSON file; default: vista_step_time.json in runs/bench/")
    add_output_args(parser)
    args = parser.parse_args()
    run = Run()
    out = output_file("vista_step_time.json", args.commit_results, committed=QUALITY_RESULTS, out=args.out)
    torch.set_num_threads(1)
    dataset = load_dataset(args.data)
    split = leave_one_out(encode(dataset))
    rows = []
    for name, (preset, model_kw, train_kw) in VARIANTS.items():
        seconds, per_epoch = step_seconds(split, len(dataset.vocab), preset, model_kw, train_kw, args.steps)
        rows.append({"variant": name, "step_s": round(seconds, 4), "epoch_s_estimate": round(seconds * per_epoch, 1)})
        print(f"{name:40s} {seconds * 1000:6.0f} ms/step  ~{seconds * per_epoch:5.1f} s/epoch", flush=True)
    out.write_text(json.dumps({"meta": run.metadata(), "data": args.data, "steps": args.steps, "threads": 1,
                               "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
