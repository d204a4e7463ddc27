"""The synthetic lifelong generator: deterministic, valid CSV, and the long-range structure it promises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from models.training.data import load_dataset
from models.training.synth import SynthConfig, user_events, write_csv

SMALL = dict(users=6, min_events=200, max_events=2000, num_topics=20, items_per_topic=10, formation=20)


def _topic(item: str, cfg: SynthConfig) -> int:
    return int(item[1:]) // cfg.items_per_topic


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    cfg = SynthConfig(**SMALL, seed=3)
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    write_csv(cfg, a, progress=False)
    write_csv(cfg, b, progress=False)
    write_csv(SynthConfig(**SMALL, seed=4), c, progress=False)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_csv_loads_through_the_pipeline_with_lengths_in_range(tmp_path: Path) -> None:
    cfg = SynthConfig(**SMALL)
    info = write_csv(cfg, tmp_path / "s.csv", progress=False)
    ds = load_dataset(tmp_path / "s.csv")
    assert len(ds.sequences) == cfg.users and ds.num_events == info["events"]
    for s in ds.sequences:
        assert cfg.min_events - 1 <= len(s) <= cfg.max_events + 1
        assert s.timestamps == sorted(s.timestamps)
        assert all(0 <= int(i[1:]) < cfg.num_items for i in s.items)


def test_probes_return_to_interests_formed_at_the_start_and_rarely_seen_since(tmp_path: Path) -> None:
    """The test item's topic is one of the first events' topics, and mostly absent from the last 50 events."""
    cfg = SynthConfig(**{**SMALL, "users": 30, "min_events": 1000, "max_events": 1000})
    write_csv(cfg, tmp_path / "s.csv", progress=False)
    absent = 0
    for s in load_dataset(tmp_path / "s.csv").sequences:
        early = {_topic(i, cfg) for i in s.items[: cfg.formation]}
        assert len(early) <= cfg.interests
        assert _topic(s.items[-1], cfg) in early and _topic(s.items[-2], cfg) in early
        assert _topic(s.items[-1], cfg) != _topic(s.items[-2], cfg)  # the validation probe gives no hint
        window = {_topic(i, cfg) for i in s.items[-52:-2]}
        absent += _topic(s.items[-1], cfg) not in window
    assert absent >= 15  # a window of 50 usually holds no evidence of the test item's interest


def test_novel_probes_are_items_the_user_has_not_consumed(tmp_path: Path) -> None:
    """probe_novel: the validation and test items are new to the user (the protocol excludes seen items, so a
    repeated popular target would otherwise favour most-popular); without it most are repeats."""
    base = {**SMALL, "users": 30, "min_events": 300, "max_events": 300, "items_per_topic": 40}
    repeats = {}
    for novel in (False, True):
        cfg = SynthConfig(**base, probe_novel=novel)
        write_csv(cfg, tmp_path / f"{novel}.csv", progress=False)
        seqs = load_dataset(tmp_path / f"{novel}.csv").sequences
        repeats[novel] = sum(s.items[-1] in set(s.items[:-1]) for s in seqs)
        assert all(_topic(s.items[-1], cfg) in {_topic(i, cfg) for i in s.items[: cfg.formation]} for s in seqs)
    assert repeats[True] == 0 and repeats[False] >= 10


def test_dormant_returns_and_noise_pool_hide_the_test_interest_from_any_shorter_window(tmp_path: Path) -> None:
    """dormancy D + noise_items: topic items appear only through the user's interests, a return comes at least
    D events after that interest's previous event, and the test item's interest has no event in the last D."""
    cfg = SynthConfig(users=20, min_events=400, max_events=400, num_topics=20, items_per_topic=10, zipf=0,
                      formation=30, session_mean=1, return_prob=0.2, dormancy=100, noise_items=500, probe_novel=True)
    assert cfg.num_items == 700
    write_csv(cfg, tmp_path / "d.csv", progress=False)
    topic_items = cfg.num_topics * cfg.items_per_topic
    for s in load_dataset(tmp_path / "d.csv").sequences:
        items = [int(i[1:]) for i in s.items]
        interests = {i // cfg.items_per_topic for i in items[: cfg.formation]}
        last: dict[int, int] = {}
        returns = 0
        for pos, item in enumerate(items[:-2]):
            if item >= topic_items:
                continue  # noise pool
            topic = item // cfg.items_per_topic
            assert topic in interests
            if pos >= cfg.formation:
                assert pos - last[topic] >= cfg.dormancy
                returns += 1
            last[topic] = pos
        assert returns >= 1
        test_topic = items[-1] // cfg.items_per_topic
        assert test_topic in interests and items[-1] not in items[:-1]
        assert all(i >= topic_items or i // cfg.items_per_topic != test_topic for i in items[-1 - cfg.dormancy : -1])
        assert items[-2] // cfg.items_per_topic != test_topic


def test_user_stream_is_chunked_by_session() -> None:
    """Streaming write: a user arrives in many small chunks, never one array of its whole history."""
    cfg = SynthConfig(**{**SMALL, "min_events": 5000, "max_events": 5000})
    chunks = [items.size for items, _ in user_events(cfg, 0)]
    assert sum(chunks) == 5000 and max(chunks) < 500


def test_bad_config_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="min_events"):
        SynthConfig(min_events=500, max_events=100)
    with pytest.raises(ValueError, match="interests"):
        SynthConfig(num_topics=2, interests=3)


def test_vista_synth_cli(tmp_path: Path) -> None:
    out = tmp_path / "cli.csv"
    result = CliRunner().invoke(app, ["synth", "--out", str(out), "--users", "2", "--min-events", "100",
                                      "--max-events", "100", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines()[0] == "user_id,item_id,timestamp"
    assert len(out.read_text().splitlines()) == 201
    bad = CliRunner().invoke(app, ["synth", "--out", str(out), "--min-events", "900", "--max-events", "100"])
    assert bad.exit_code != 0 and "min_events" in bad.output


def test_vista_synth_cli_keeps_config_values_not_given_as_flags(tmp_path: Path) -> None:
    """A flag left out must not reset the config's value to the flag default (it once did: every world
    ran with 200 users and return_prob 0.03 whatever its YAML said)."""
    world = tmp_path / "world.yaml"
    world.write_text("users: 3\nreturn_prob: 0.5\nnum_topics: 5\nitems_per_topic: 4\nmin_events: 60\nmax_events: 60\n")
    out = tmp_path / "world.csv"
    result = CliRunner().invoke(app, ["synth", "--config", str(world), "--out", str(out), "--max-events", "80",
                                      "--min-events", "80"])
    assert result.exit_code == 0, result.output
    config = json.loads(result.output)["config"]
    assert (config["users"], config["return_prob"], config["num_topics"], config["max_events"]) == (3, 0.5, 5, 80)
    assert len(out.read_text().splitlines()) == 1 + 3 * 80


def test_count_oracle_ranks_the_topics_its_window_counted() -> None:
    from benchmarks.quality.oracle import oracle_hit_rate

    cfg = SynthConfig(users=1, min_events=8, max_events=8, num_topics=2, items_per_topic=10, interests=1,
                     formation=1)
    # three topic-0 events, then one of topic 1; the target (item 3) is a new topic-0 item
    users = {"u0": [0, 1, 2, 10, 3]}
    assert oracle_hit_rate(users, cfg, window=0) == 1.0  # topic 0 counted 3x: its 7 new items lead
    assert oracle_hit_rate(users, cfg, window=1) == 0.0  # only topic 1 in view: its 9 new items, no topic 0
    # the target's topic 1 is counted less (2 < 3) but idle for the last 3 events: `idle` puts it first
    idle_case = {"u0": [10, 11, 0, 1, 2, 12]}
    assert oracle_hit_rate(idle_case, cfg, window=0, idle=3) == 1.0
    assert oracle_hit_rate(idle_case, cfg, window=0, k=7) == 0.0  # topic 0's 7 new items fill the top 7


def test_the_oracle_under_both_protocols_on_a_re_consumption_case() -> None:
    """The target is an item the user already consumed: masked, the oracle can never rank it (it only ranks
    unseen items); with every item rankable it is among the counted topic's items."""
    from benchmarks.quality.oracle import oracle_hit_rate

    cfg = SynthConfig(users=1, min_events=8, max_events=8, num_topics=2, items_per_topic=5, interests=1,
                      formation=1)
    users = {"u0": [0, 1, 2, 7, 1]}  # topic 0 three times, then topic 1; the target 1 returns
    assert oracle_hit_rate(users, cfg, window=0) == 0.0
    assert oracle_hit_rate(users, cfg, window=0, exclude_seen=False) == 1.0


def test_the_lifelong_worlds_are_deterministic_by_seed_at_full_length(tmp_path: Path) -> None:
    """The 10^4-event world (issue 20), two of its users: the same seed writes the same bytes, another seed not."""
    import yaml

    raw = yaml.safe_load(Path("experiments/synth_worlds/lifelong10k.yaml").read_text())
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    write_csv(SynthConfig(**{**raw, "users": 2}), a, progress=False)
    write_csv(SynthConfig(**{**raw, "users": 2}), b, progress=False)
    write_csv(SynthConfig(**{**raw, "users": 2, "seed": 1}), c, progress=False)
    assert a.read_bytes() == b.read_bytes() and a.read_bytes() != c.read_bytes()
    assert [len(s) for s in load_dataset(a).sequences] == [10_000, 10_000]
