"""Count oracles for a synthetic world: how far can knowing the topics of the last W events go?

The generator's item ids encode topics (`i{topic * items_per_topic + k}`; ids past the topics are noise), so
an oracle can rank, for each test user, the unseen items of the topics it counted in the last W events of the
test history (most events first, uniform inside a topic, the rest after). Run at several W, this says what a
model that truncates its history to W events could reach at best and whether the world separates full
history from a window at all, before any model is trained on it.

    python -m benchmarks.quality.oracle --config experiments/synth_worlds/many.yaml \
        --data runs/synth/M300.csv --windows 20,50,100,0
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

from models.training.data import load_dataset
from models.training.synth import SynthConfig


def read_users(path: str | Path) -> dict[str, list[int]]:
    """Item ids (as ints) per user in time order, read by the harness's own loader."""
    return {s.user: [int(item.lstrip("i")) for item in s.items] for s in load_dataset(path).sequences}


def oracle_hit_rate(users: dict[str, list[int]], cfg: SynthConfig, window: int, k: int = 10,
                    idle: int = 0, seed: int = 0, exclude_seen: bool = True) -> float:
    """HR@k of the topic-count oracle that sees the last `window` events (0: all) of each test history.

    `idle` > 0 also puts topics with no event in the last `idle` events first (what a dormant world rewards).
    Seen items are excluded, as in the harness's default protocol; `exclude_seen=False` ranks every item of the
    counted topics, seen or not (the re-consumption protocol).
    """
    rng = np.random.default_rng(seed)
    topic_items = cfg.num_topics * cfg.items_per_topic
    hits = 0
    for items in users.values():
        history, target = items[:-1], items[-1]
        seen = set(history) if exclude_seen else set()
        view = history[-window:] if window else history
        counts: dict[int, int] = defaultdict(int)
        for item in view:
            if item < topic_items:
                counts[item // cfg.items_per_topic] += 1
        recent = {i // cfg.items_per_topic for i in history[-idle:] if i < topic_items} if idle else set()
        order = sorted(counts, key=lambda t: (t in recent, -counts[t], rng.random()))
        ranked: list[int] = []
        for topic in order:
            fresh = [i for i in range(topic * cfg.items_per_topic, (topic + 1) * cfg.items_per_topic) if i not in seen]
            rng.shuffle(fresh)
            ranked.extend(fresh)
            if len(ranked) >= k:
                break
        hits += target in ranked[:k]
    return hits / len(users)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="the world's SynthConfig YAML")
    parser.add_argument("--data", required=True, help="the CSV `vista synth` wrote from it")
    parser.add_argument("--windows", default="20,50,100,200,0", help="comma-separated; 0 = the whole history")
    parser.add_argument("--idle", type=int, default=0, help="rank topics idle for this many events first")
    parser.add_argument("--include-seen", action="store_true", help="every item rankable, seen ones too (the "
                        "re-consumption protocol; the default masks seen items, as the harness does by default)")
    args = parser.parse_args()
    cfg = SynthConfig(**yaml.safe_load(Path(args.config).read_text()))
    users = read_users(args.data)
    out = {f"HR@10 last {int(w) or 'all'}": round(oracle_hit_rate(users, cfg, int(w), idle=args.idle,
                                                                  exclude_seen=not args.include_seen), 4)
           for w in args.windows.split(",")}
    print(json.dumps({"data": args.data, "users": len(users), "idle": args.idle,
                      "exclude_seen": not args.include_seen, **out}, indent=2))


if __name__ == "__main__":
    main()
