"""benchmarks.output: scratch folder by default, committed folder only with --commit-results, run metadata."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

import pytest

from benchmarks import output


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    output.add_output_args(parser)
    return parser.parse_args(list(argv))


def test_default_dir_is_runs_bench() -> None:
    args = _args()
    assert args.commit_results is False
    assert output.output_dir(args.commit_results) == output.REPO_ROOT / "runs" / "bench"
    assert output.output_file("x.json", args.commit_results) == output.REPO_ROOT / "runs" / "bench" / "x.json"


def test_commit_results_gives_committed_dir() -> None:
    args = _args("--commit-results")
    assert args.commit_results is True
    results = Path(output.__file__).resolve().parent / "results"
    assert output.output_dir(args.commit_results) == results
    quality = results.parent / "quality" / "results"
    assert output.output_file("x.json", True, committed=output.QUALITY_RESULTS) == quality / "x.json"


def test_committed_folder_needs_the_flag(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        output.output_file("x.json", False, out=output.RESULTS / "x.json")
    with pytest.raises(SystemExit):
        output.output_dir(False, out=output.QUALITY_RESULTS)
    assert output.output_file("x.json", False, out=tmp_path / "a" / "x.json") == tmp_path / "a" / "x.json"
    assert (tmp_path / "a").is_dir()


def test_metadata_has_date_machine_and_load() -> None:
    meta = output.Run().metadata()
    datetime.fromisoformat(meta["date"])
    assert {"node", "cpu_model", "cpus"} <= meta["machine"].keys()
    assert meta["machine"]["cpus"] >= 1
    assert {"start", "end"} <= meta["load"].keys()
