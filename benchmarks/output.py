"""Where benchmark scripts write, and what their JSON says about the run (date, machine, load).

By default results go to the scratch folder `runs/bench/` (git-ignored); the committed folders
(`benchmarks/results/`, `benchmarks/quality/results/`) change only with `--commit-results`.

    parser = argparse.ArgumentParser(...)
    add_output_args(parser)
    args = parser.parse_args()
    run = Run()                                   # date and load average at the start
    path = output_file("x.json", args.commit_results)
    path.write_text(json.dumps({"meta": run.metadata(), ...}))
"""

from __future__ import annotations

import argparse
import os
import platform
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRATCH = REPO_ROOT / "runs" / "bench"
RESULTS = Path(__file__).resolve().with_name("results")
QUALITY_RESULTS = Path(__file__).resolve().parent / "quality" / "results"
COMMITTED = (RESULTS, QUALITY_RESULTS)


def add_output_args(parser: argparse.ArgumentParser) -> None:
    """Add `--commit-results` (write into the committed results folder instead of runs/bench/)."""
    parser.add_argument("--commit-results", action="store_true",
                        help="write results into the committed folder (benchmarks/results/ or "
                             "benchmarks/quality/results/) instead of the scratch folder runs/bench/")


def _check(path: Path, commit_results: bool) -> Path:
    """`path`, unless it lies in a committed folder without --commit-results (then exit with a message)."""
    resolved = path.resolve()
    if not commit_results and any(resolved == c or c in resolved.parents for c in COMMITTED):
        raise SystemExit(f"error: {path} is in a committed results folder: pass --commit-results to write there")
    return path


def output_dir(commit_results: bool = False, committed: Path = RESULTS, out: Path | str | None = None) -> Path:
    """The folder to write into, created: `out` if given, else `committed` with --commit-results, else
    runs/bench/. A folder inside a committed one needs --commit-results."""
    path = Path(out) if out is not None else (committed if commit_results else SCRATCH)
    _check(path, commit_results).mkdir(parents=True, exist_ok=True)
    return path


def output_file(name: str, commit_results: bool = False, committed: Path = RESULTS,
                out: Path | str | None = None) -> Path:
    """The file to write, its folder created: `out` if given, else `name` in `output_dir(...)`.
    A file inside a committed folder needs --commit-results."""
    path = Path(out) if out is not None else output_dir(commit_results, committed) / name
    _check(path, commit_results).parent.mkdir(parents=True, exist_ok=True)
    return path


def cpu_model() -> str | None:
    """The CPU model name from /proc/cpuinfo (Linux), else platform.processor(), else None."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def load_average() -> list[float] | None:
    """os.getloadavg() (1, 5, 15 minutes), rounded; None where the platform has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine() -> dict[str, Any]:
    """Host name, CPU model, CPU count, OS platform and Python version."""
    return {"node": platform.node(), "cpu_model": cpu_model(), "cpus": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version()}


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


@dataclass
class Run:
    """One benchmark run: the date and load average taken when it is created (at the start)."""

    date: str = field(default_factory=_now)
    load_start: list[float] | None = field(default_factory=load_average)

    def metadata(self) -> dict[str, Any]:
        """`date` (ISO start), `finished` (ISO now), `machine` and `load` (`start`, `end` = now)."""
        return {"date": self.date, "finished": _now(), "machine": machine(),
                "load": {"start": self.load_start, "end": load_average()}}
