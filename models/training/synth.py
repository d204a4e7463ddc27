"""Synthetic lifelong users whose next item depends on events far in the past.

World: `num_topics` topics of `items_per_topic` items each, Zipf popularity inside a topic.
User: a few long-term interest topics, set by a formation phase at the very start of the history.
After that the user browses in sessions (geometric length); a session's topic is one of the user's
interests only with probability `return_prob` (rare returns), otherwise a random topic (noise).
The last `probes` events (validation and test targets under leave-one-out) are each a return to an
interest with probability `probe_return_prob`, consecutive probes to different interests (so the
validation probe, the last event of the test history, does not reveal the test's interest): a model that
sees only a recent window usually has no evidence of the right interest left, one that summarizes the
whole history does.

Two options make the far past decisive: `noise_items` (non-return events come from a separate uniform pool,
so topic items appear only through a user's interests) and `dormancy` D (a return goes only to an interest
idle for D events, and the test probe's interest gets no return in the final D events, so no window shorter
than D holds it). Both default off, and the default worlds are byte-identical to before they existed.

Deterministic for a seed (each user has its own `numpy` stream, seeded by (seed, user index)), and
written as a user_id,item_id,timestamp CSV one session at a time (bounded memory whatever the length).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm import tqdm


class SynthConfig(BaseModel):
    """Generator knobs; defaults give ~1k–10k events per user."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: int = Field(default=200, ge=1)
    min_events: int = Field(default=1000, ge=8, description="history length per user, log-uniform in [min, max]")
    max_events: int = Field(default=10_000, ge=8, le=10_000_000)
    num_topics: int = Field(default=100, ge=2)
    items_per_topic: int = Field(default=50, ge=2)
    zipf: float = Field(default=1.0, ge=0, description="Zipf exponent of item popularity inside a topic")
    interests: int = Field(default=3, ge=1, description="long-term interest topics per user")
    formation: int = Field(default=40, ge=1, description="first events, all from the interests")
    session_mean: float = Field(default=10.0, ge=1, description="mean session length (geometric)")
    return_prob: float = Field(default=0.03, ge=0, le=1, description="P(a session returns to an interest)")
    probes: int = Field(default=2, ge=0, description="final events drawn as probes (validation + test)")
    probe_return_prob: float = Field(default=1.0, ge=0, le=1, description="P(a probe is a return to an interest)")
    probe_novel: bool = Field(default=False, description="probes are items the user has not consumed yet (when "
                              "the topic has any left): under the seen-items-excluded protocol a repeated, "
                              "popular target is otherwise easy for most-popular")
    noise_items: int = Field(default=0, ge=0, description="a separate pool of items outside every topic: when > 0 "
                             "a non-return session draws uniformly from it instead of from a random topic, so topic "
                             "items appear only through interests and noise spreads thin over many items")
    dormancy: int = Field(default=0, ge=0, description="a return (and a probe) goes only to an interest with no "
                          "event in the last `dormancy` events (no interest dormant: noise); a window shorter than "
                          "this never holds the topic of the next return")
    seed: int = 0
    start_ts: int = Field(default=1_600_000_000, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "SynthConfig":
        if self.min_events > self.max_events:
            raise ValueError(f"min_events {self.min_events} > max_events {self.max_events}")
        if self.interests > self.num_topics:
            raise ValueError(f"interests {self.interests} > num_topics {self.num_topics}")
        if self.formation + self.probes > self.min_events:
            raise ValueError("formation + probes must fit in min_events")
        return self

    @property
    def num_items(self) -> int:
        return self.num_topics * self.items_per_topic + self.noise_items


def _topic_probs(cfg: SynthConfig) -> np.ndarray:
    ranks = np.arange(1, cfg.items_per_topic + 1, dtype=np.float64)
    p = ranks ** -cfg.zipf
    return p / p.sum()


def user_events(cfg: SynthConfig, user: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(item ids, timestamps) chunks of one user, in order; one chunk per session."""
    rng = np.random.default_rng([cfg.seed, user])
    probs = _topic_probs(cfg)
    span = np.log(cfg.max_events) - np.log(cfg.min_events)
    length = int(round(np.exp(np.log(cfg.min_events) + rng.random() * span)))
    interests = rng.choice(cfg.num_topics, size=cfg.interests, replace=False)
    ts = cfg.start_ts + int(rng.integers(0, 86_400))
    seen = np.zeros(cfg.num_items, dtype=bool)
    last_seen = np.full(cfg.num_topics, -(10**12), dtype=np.int64)  # position of each topic's latest event
    pos = 0  # events emitted so far

    def stamp(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nonlocal ts, pos
        seen[items] = True
        gaps = 1 + rng.exponential(600.0, size=items.size).astype(np.int64)  # ~10 minutes apart within a session
        gaps[0] += int(rng.exponential(86_400.0))  # sessions are about a day apart
        stamps = ts + np.cumsum(gaps)
        ts = int(stamps[-1])
        pos += items.size
        return items, stamps

    def draw(topics: np.ndarray, novel: bool = False) -> tuple[np.ndarray, np.ndarray]:
        items = topics * cfg.items_per_topic + rng.choice(cfg.items_per_topic, size=topics.size, p=probs)
        if novel:  # one probe: Zipf over the topic's items this user has not consumed yet
            first = int(topics[0]) * cfg.items_per_topic
            fresh = probs * ~seen[first : first + cfg.items_per_topic]
            if fresh.sum() > 0:
                items = np.array([first + rng.choice(cfg.items_per_topic, p=fresh / fresh.sum())])
        last_seen[topics] = pos + np.arange(1, topics.size + 1)
        return stamp(items)

    def noise(size: int) -> tuple[np.ndarray, np.ndarray]:
        if cfg.noise_items:
            return stamp(cfg.num_topics * cfg.items_per_topic + rng.integers(cfg.noise_items, size=size))
        return draw(np.full(size, rng.integers(cfg.num_topics)))

    def dormant(exclude: int | None = None) -> np.ndarray:
        """Interests with no event in the last `dormancy` events (all of them when dormancy is 0)."""
        ok = pos - last_seen[interests] >= cfg.dormancy
        if exclude is not None:
            ok &= interests != exclude
        return interests[ok]

    # with dormancy, the last probe's interest is chosen now and gets no return in the final `dormancy` events
    withheld = rng.choice(interests) if cfg.dormancy else None
    hold_from = length - cfg.probes - cfg.dormancy
    yield draw(rng.choice(interests, size=cfg.formation))
    left = length - cfg.formation - cfg.probes
    while left > 0:
        size = min(left, int(rng.geometric(1.0 / cfg.session_mean)))
        if rng.random() < cfg.return_prob and (eligible := dormant(withheld if pos + size > hold_from else None)).size:
            yield draw(np.full(size, rng.choice(eligible)))
        else:
            yield noise(size)
        left -= size
    order = rng.permutation(interests)  # consecutive probes return to different interests, so the
    for p in range(cfg.probes):  # validation probe (the test case's last event) gives no hint of the test's
        if rng.random() >= cfg.probe_return_prob:
            topic = rng.integers(cfg.num_topics)
        elif withheld is None:
            topic = order[p % order.size]
        elif p == cfg.probes - 1:
            topic = withheld
        else:  # earlier probes: the longest-dormant other interest
            others = interests[interests != withheld] if interests.size > 1 else interests
            topic = others[np.argmin(last_seen[others])]
        yield draw(np.array([topic]), novel=cfg.probe_novel)


def write_csv(cfg: SynthConfig, path: str | Path, progress: bool = True) -> dict:
    """Stream every user's events to `path`; returns counts (users, events, items)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    events = 0
    with out.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["user_id", "item_id", "timestamp"])
        for user in tqdm(range(cfg.users), desc="synth users", disable=not progress or None):
            uid = f"u{user}"
            for items, stamps in user_events(cfg, user):
                writer.writerows(zip([uid] * items.size, (f"i{i}" for i in items.tolist()), stamps.tolist()))
                events += items.size
    return {"path": str(out), "users": cfg.users, "events": events, "catalog_items": cfg.num_items}
