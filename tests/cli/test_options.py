"""CLI options come from the pydantic configs: defaults and help are the fields', values reach the config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from cli.main import app as vista_app
from cli.options import config_options
from models.device import resolve_device
from stream.scorer.config import ScorerConfig
from stream.worker import WorkerConfig


def _app(seen: dict) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @config_options(WorkerConfig, {"group_id": "--group", "batch_max_events": "--batch-events",
                                   "torch_threads": "--threads", "until_caught_up": "--until-caught-up",
                                   "seeds_dtype": "--seeds-dtype"})
    def run(ckpt: Path = typer.Option(..., "--ckpt"), *, config: dict) -> None:
        seen.update(WorkerConfig(ckpt=ckpt, **config).model_dump())

    return app


def test_defaults_are_the_configs_and_given_values_reach_it() -> None:
    seen: dict = {}
    result = CliRunner().invoke(_app(seen), ["--ckpt", "m"])
    assert result.exit_code == 0, result.output
    default = WorkerConfig(ckpt=Path("m")).model_dump()
    assert seen == default
    result = CliRunner().invoke(_app(seen), ["--ckpt", "m", "--group", "g2", "--batch-events", "7", "--threads", "3",
                                             "--until-caught-up", "--seeds-dtype", "int8q"])
    assert result.exit_code == 0, result.output
    assert (seen["group_id"], seen["batch_max_events"], seen["torch_threads"], seen["until_caught_up"],
            seen["seeds_dtype"]) == ("g2", 7, 3, True, "int8q")


def test_invalid_values_are_refused_by_the_config() -> None:
    result = CliRunner().invoke(_app({}), ["--ckpt", "m", "--seeds-dtype", "float64"])
    assert result.exit_code != 0


@pytest.mark.parametrize("command, field, flag", [("worker", WorkerConfig.model_fields["batch_max_ms"], "--batch-ms"),
                                                  ("serve", ScorerConfig.model_fields["max_candidates"],
                                                   "--max-candidates")])
def test_the_real_commands_show_the_configs_defaults(command: str, field, flag: str) -> None:  # noqa: ANN001
    result = CliRunner().invoke(vista_app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    line = next(ln for ln in result.output.splitlines() if flag in ln)
    assert f"[default: {field.default}]" in line or str(field.default) in result.output


def test_device_resolution_is_explicit() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ValueError):
        resolve_device("tpu")
