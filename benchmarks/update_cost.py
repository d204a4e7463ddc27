"""Update cost against history length: the per-event time of applying new events to users who already have
10, 10^3 and 10^6 events behind them, in the same run. The state is fixed-size, so the ratio should be ~1.

    python -m benchmarks.update_cost [--prior 10,1000,1000000] [--users 64] [--new 16] [--repeats 20]

Each prior history is really replayed (one user, `model.update` over its events; 10^6 events take ~15 s),
then copied to `--users` users, who each get `--new` events per timed call, as a stream micro-batch does.
The default model (the general preset), untrained, on CPU. JSON and a PNG under runs/bench/ (benchmarks/results/
with `--commit-results`).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch

from benchmarks.output import Run, add_output_args, output_file
from models.config import ModelConfig
from models.state import EventBatch, UserStates
from models.vista import VistaModel

ITEMS = 20_000


def _events(users: int, per_user: int, start_ts: int, generator: torch.Generator) -> EventBatch:
    n = users * per_user
    return EventBatch(torch.randint(1, ITEMS + 1, (n,), generator=generator), torch.zeros(n, dtype=torch.long),
                      start_ts + 60 * torch.arange(n) % (60 * per_user), torch.full((users,), per_user))


def _replicated(state: UserStates, users: int) -> UserStates:
    return UserStates(*(t.expand(users, *t.shape[1:]).clone() for t in (
        state.memory, state.count, state.last_ts, state.recent_items, state.recent_h)))


def measure(model: VistaModel, prior: int, users: int, new: int, repeats: int, generator: torch.Generator) -> dict:
    t0 = time.perf_counter()
    history = model.update(model.init_state(1), _events(1, prior, 0, generator))
    build_s = time.perf_counter() - t0
    states = _replicated(history, users)
    times = []
    for _ in range(repeats + 2):
        batch = _events(users, new, 60 * prior + 60, generator)
        t = time.perf_counter()
        model.update(states, batch)
        times.append(time.perf_counter() - t)
    per_event_us = [1e6 * t / (users * new) for t in times[2:]]  # the first two warm up
    return {"prior_events": prior, "count_in_state": int(history.count[0]), "replay_s": round(build_s, 2),
            "per_event_us_median": round(statistics.median(per_event_us), 3),
            "per_event_us_p90": round(sorted(per_event_us)[int(0.9 * (len(per_event_us) - 1))], 3)}


def plot(results: list[dict], path) -> None:  # noqa: ANN001 - a Path
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["prior_events"] for r in results], [r["per_event_us_median"] for r in results], "o-")
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("events already in the user's state")
    ax.set_ylabel("µs per new event (median)")
    ax.set_title("update cost vs history length")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior", default="10,1000,1000000")
    ap.add_argument("--users", type=int, default=64)
    ap.add_argument("--new", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    add_output_args(ap)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Run()
    torch.manual_seed(0)
    model = VistaModel(ModelConfig(num_items=ITEMS)).eval()
    generator = torch.Generator().manual_seed(0)
    results = [measure(model, p, args.users, args.new, args.repeats, generator)
               for p in map(int, args.prior.split(","))]
    base = results[0]["per_event_us_median"]
    for r in results:
        r["ratio_to_shortest"] = round(r["per_event_us_median"] / base, 3)
        print(json.dumps(r), flush=True)
    out = output_file("update_cost.json", args.commit_results)
    out.write_text(json.dumps({"meta": run.metadata(), "users": args.users, "new_events_per_user": args.new,
                               "torch_threads": torch.get_num_threads(),
                               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                               "results": results}, indent=2))
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
