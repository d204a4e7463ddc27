"""Harness: configs validate, aggregation is right by hand, an end-to-end tiny run writes resumable results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from models.baselines import build_baseline
from models.training.harness import ExperimentConfig, aggregate, load_config, run_experiment, table

TINY_VISTA = dict(dim=16, heads=2, layers=1, target_layers=1, target_heads=2, num_seeds=4, recent=4, recon_window=4)


def test_aggregate_mean_and_sample_std_by_hand() -> None:
    agg = aggregate({"0": {"NDCG@10": 0.1, "HR@10": 0.2}, "1": {"NDCG@10": 0.2, "HR@10": 0.2},
                     "2": {"NDCG@10": 0.3, "HR@10": 0.2}})
    assert agg["NDCG@10"]["mean"] == pytest.approx(0.2)
    assert agg["NDCG@10"]["std"] == pytest.approx(0.1)  # sqrt(((-.1)² + 0 + .1²) / 2)
    assert agg["HR@10"]["std"] == pytest.approx(0.0, abs=1e-12) and agg["HR@10"]["n"] == 3
    assert aggregate({"0": {"MRR": 0.5}})["MRR"] == {"mean": 0.5, "std": 0.0, "n": 1}


def test_config_errors_are_clear(tmp_path: Path) -> None:
    run = {"name": "a", "kind": "popular"}
    with pytest.raises(ValueError, match="unique"):
        ExperimentConfig(name="x", data="d.csv", runs=[run, run])
    with pytest.raises(ValueError, match="kind"):
        ExperimentConfig(name="x", data="d.csv", runs=[{"name": "a", "kind": "gru4rec"}])
    with pytest.raises(ValueError, match="extra"):
        ExperimentConfig(name="x", data="d.csv", runs=[run], sedes=[1])
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")


def test_shipped_configs_validate() -> None:
    configs = sorted(Path("experiments").glob("*.yaml"))
    assert configs
    for path in configs:
        load_config(path)


def test_split_has_no_leakage_into_baseline_training(chain_split) -> None:
    """No training example of any baseline contains a user's validation or test item (chain items are unique)."""
    ds, split = chain_split
    held_out = {(h.user, t) for h, t in split.test} | {(h.user, t) for h, t in split.valid}
    for kind in ("sasrec", "hstu"):
        model = build_baseline(kind, len(ds.vocab), dim=16, heads=2)
        examples = model.examples(split.train)
        seen = {int(i) for x, y in examples for i in (*x, *y)}
        per_user_train = {s.user: set(s.items.tolist()) for s in split.train}
        for user, item in held_out:
            assert item not in per_user_train[user]
        assert seen <= {i for s in split.train for i in s.items.tolist()}
    sim = build_baseline("sim", len(ds.vocab), dim=16)
    assert all(len(a) == len(b) and (a == b.items).all() for (a, _), b in zip(sim.examples(split.train), split.train))


def test_end_to_end_tiny_experiment_then_resume(chain_csv: Path, tmp_path: Path) -> None:
    """Most-popular, SASRec and VISTA, 2 seeds, tiny budgets: results JSON with mean ± std; a rerun skips."""
    cfg = ExperimentConfig(
        name="tiny", data=str(chain_csv), seeds=[0, 1], out_dir=str(tmp_path / "runs"),
        runs=[{"name": "pop", "kind": "popular"},
              {"name": "sasrec", "kind": "sasrec", "model": {"dim": 16, "heads": 2, "max_len": 10},
               "train": {"epochs": 3, "batch_size": 8, "time_budget_s": 10}},
              {"name": "vista", "kind": "vista", "model": TINY_VISTA,
               "train": {"epochs": 2, "batch_size": 8, "window": 20, "time_budget_s": 10, "eval_users": 20}}])
    messages: list[str] = []
    payload = run_experiment(cfg, log=messages.append)
    saved = json.loads(cfg.results_path.read_text())
    assert saved["models"].keys() == {"pop", "sasrec", "vista"}
    assert saved["dataset"] == {"users": 20, "items": 30, "events": 240, "test_users": 20}
    for name, entry in saved["models"].items():
        assert set(entry["runs"]) == {"0", "1"}
        for run in entry["runs"].values():
            assert run["test"]["users"] == 20 and 0 <= run["test"]["NDCG@10"] <= 1
        assert entry["aggregate"]["NDCG@10"]["n"] == 2 and not math.isnan(entry["aggregate"]["NDCG@10"]["std"])
    assert (tmp_path / "runs" / "tiny" / "sasrec" / "seed0" / "checkpoint" / "model.safetensors").exists()
    assert (tmp_path / "runs" / "tiny" / "vista" / "seed1" / "checkpoint" / "meta.json").exists()
    assert (tmp_path / "runs" / "tiny" / "sasrec" / "seed1" / "train_log.jsonl").read_text().count("\n") >= 1
    pop = saved["models"]["pop"]["runs"]
    assert pop["0"]["test"] == pop["1"]["test"]  # most-popular has no randomness
    assert "| sasrec | 2 |" in table(payload)

    messages.clear()
    run_experiment(cfg, log=messages.append)
    assert sum("skipped" in m for m in messages) == 6
    assert json.loads(cfg.results_path.read_text())["models"] == saved["models"]

    # a changed spec makes its stored runs stale: they are rerun, the others still skipped
    changed = cfg.model_copy(update={"runs": [*cfg.runs[:2], cfg.runs[2].model_copy(
        update={"train": {**cfg.runs[2].train, "lr": 0.004}})]})
    messages.clear()
    rerun = run_experiment(changed, log=messages.append)
    assert sum("skipped" in m for m in messages) == 4 and any("vista: its spec" in m for m in messages)
    assert rerun["models"]["vista"]["spec"]["train"]["lr"] == 0.004
    assert rerun["models"]["sasrec"] == saved["models"]["sasrec"]


def test_concurrent_experiments_on_one_results_file_keep_each_others_runs(
        chain_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two `vista experiment --only ...` processes share a results file: what the other one writes while
    this one trains is merged, never overwritten by a stale copy."""
    import models.training.harness as harness

    cfg = ExperimentConfig(name="shared", data=str(chain_csv), seeds=[0, 1], out_dir=str(tmp_path / "runs"),
                           runs=[{"name": "a", "kind": "popular"}, {"name": "b", "kind": "popular"}])
    real_run_one = harness.run_one

    def run_one_while_the_other_process_writes(spec, split, vocab, seed, *args, **kwargs):  # noqa: ANN001, ANN202
        result = real_run_one(spec, split, vocab, seed, *args, **kwargs)
        payload = json.loads(cfg.results_path.read_text())  # the other process finishes b/seed while we ran
        other = payload.setdefault("models", {}).setdefault("b", {"kind": "popular", "runs": {}})
        other["runs"][str(seed)] = result
        cfg.results_path.write_text(json.dumps(payload))
        return result

    monkeypatch.setattr(harness, "run_one", run_one_while_the_other_process_writes)
    run_experiment(cfg, only=["a"], log=lambda m: None)
    saved = json.loads(cfg.results_path.read_text())["models"]
    assert set(saved["a"]["runs"]) == {"0", "1"} and set(saved["b"]["runs"]) == {"0", "1"}
    monkeypatch.setattr(harness, "run_one", real_run_one)
    messages: list[str] = []
    run_experiment(cfg, log=messages.append)  # everything is already there
    assert sum("skipped" in m for m in messages) == 4


def test_same_seed_same_result(chain_csv: Path, tmp_path: Path) -> None:
    def once(tag: str) -> dict:
        cfg = ExperimentConfig(name=tag, data=str(chain_csv), seeds=[5], out_dir=str(tmp_path),
                               runs=[{"name": "s", "kind": "sasrec", "model": {"dim": 16, "heads": 2},
                                      "train": {"epochs": 2, "batch_size": 8}}])
        return run_experiment(cfg, log=lambda m: None)["models"]["s"]["runs"]["5"]["test"]

    assert once("a") == once("b")


def test_experiment_and_baseline_cli(chain_csv: Path, tmp_path: Path) -> None:
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({"name": "cli", "data": str(chain_csv), "seeds": [0], "out_dir": str(tmp_path),
                                      "runs": [{"name": "pop", "kind": "popular"}]}))
    result = CliRunner().invoke(app, ["experiment", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "| pop | 1 |" in result.output
    result = CliRunner().invoke(app, ["baseline", "--model", "hstu", "--data", str(chain_csv), "--out", str(tmp_path),
                                      "--model-config", '{"dim": 16, "heads": 2}',
                                      "--train-config", '{"epochs": 1, "batch_size": 8}'])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout[result.stdout.index("{"):])["test"]["users"] == 20
    bad = CliRunner().invoke(app, ["baseline", "--model", "nope", "--data", str(chain_csv), "--out", str(tmp_path)])
    assert bad.exit_code != 0


def test_history_window_truncates_every_input_but_keeps_targets(chain_split) -> None:
    from models.training.harness import windowed

    _, split = chain_split
    w = windowed(split, 4)
    assert [t for _, t in w.test] == [t for _, t in split.test]
    assert all(len(h) == 4 and (h.items == full.items[-4:]).all() for (h, _), (full, _) in zip(w.test, split.test))
    assert max(len(s) for s in w.train) == 5  # 4 events of context + the target
    targets = sorted(i for s in w.train for i in s.items[1:].tolist())
    assert targets == sorted(i for s in split.train for i in s.items[1:].tolist())  # every target exactly once


def test_an_experiment_without_masking_runs_every_family_under_that_protocol(chain_csv: Path, tmp_path: Path) -> None:
    """`exclude_seen: false` reaches the test metrics and every family's validation, and is stored with the
    runs, so masked and unmasked results never mix."""
    runs = [{"name": "pop", "kind": "popular"},
            {"name": "sasrec", "kind": "sasrec", "model": {"dim": 16, "heads": 2, "max_len": 10},
             "train": {"epochs": 1, "batch_size": 8, "time_budget_s": 10}}]
    masked = run_experiment(ExperimentConfig(name="m", data=str(chain_csv), seeds=[0], out_dir=str(tmp_path),
                                             runs=runs), log=lambda _: None)
    open_ = run_experiment(ExperimentConfig(name="o", data=str(chain_csv), seeds=[0], out_dir=str(tmp_path),
                                            runs=runs, exclude_seen=False), log=lambda _: None)
    assert "none masked" in open_["protocol"] and "seen items excluded" in masked["protocol"]
    assert open_["models"]["sasrec"]["defaults"] == {"exclude_seen": False}
    log = (tmp_path / "o" / "sasrec" / "seed0" / "train_log.jsonl").read_text()
    assert log  # validated under the unmasked protocol (BudgetConfig.exclude_seen)
    # most-popular ranks the users' own (popular) items first once nothing is masked
    assert open_["models"]["pop"]["runs"]["0"]["test"] != masked["models"]["pop"]["runs"]["0"]["test"]


def test_every_family_is_tested_under_both_protocols(chain_csv: Path, tmp_path: Path) -> None:
    """`both_protocols`: each family's test metrics under the configured protocol (`test`) and the other
    (`test_other`, with its `exclude_seen`); validation follows the configured one (issue 20)."""
    quick = {"epochs": 1, "batch_size": 8, "time_budget_s": 10, "eval_users": 20}
    runs = [{"name": "pop", "kind": "popular"},
            {"name": "sasrec", "kind": "sasrec", "model": {"dim": 16, "heads": 2, "max_len": 10}, "train": quick},
            {"name": "hstu", "kind": "hstu", "model": {"dim": 16, "heads": 2, "max_len": 10}, "train": quick},
            {"name": "sim", "kind": "sim", "model": {"dim": 16}, "train": quick},
            {"name": "vista", "kind": "vista", "model": {**TINY_VISTA, "memory_readout": True},
             "train": {**quick, "window": 20}}]
    payload = run_experiment(ExperimentConfig(name="both", data=str(chain_csv), seeds=[0], out_dir=str(tmp_path),
                                              runs=runs, exclude_seen=False, both_protocols=True), log=lambda _: None)
    for name, entry in payload["models"].items():
        run = entry["runs"]["0"]
        assert run["test_other"]["exclude_seen"] is True, name
        assert {"NDCG@10", "HR@10"} <= run["test"].keys() & run["test_other"].keys(), name
        assert entry["aggregate_other"]["NDCG@10"]["n"] == 1, name
    # the chain users never repeat an item, so masking what they saw can only help: popular ranks differently
    pop = payload["models"]["pop"]["runs"]["0"]
    assert pop["test_other"]["NDCG@10"] >= pop["test"]["NDCG@10"]
