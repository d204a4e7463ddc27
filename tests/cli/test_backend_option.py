"""`--backend` on every model-running command reaches its config, and from there `resolve_backend`."""

from __future__ import annotations

import faulthandler
from pathlib import Path

import pytest
from typer.testing import CliRunner

import kernels.dispatch
import models.preset
import stream.scorer.engine
import stream.worker
from cli.main import app


class _Reached(Exception):
    """Raised by a stand-in once the value has been seen: the command goes no further (no Kafka, no model)."""


def test_worker_passes_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict = {}

    def fake_worker(config, settings):  # noqa: ANN001, ANN202
        seen["backend"] = config.backend
        raise _Reached

    monkeypatch.setattr(stream.worker, "Worker", fake_worker)
    monkeypatch.setattr(faulthandler, "register", lambda *a, **k: None)  # CliRunner's stderr has no fileno
    result = CliRunner().invoke(app, ["worker", "--ckpt", "m", "--backend", "triton"])
    assert isinstance(result.exception, _Reached), result.output
    assert seen == {"backend": "triton"}


def test_serve_passes_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict = {}

    def fake_engine(config, store):  # noqa: ANN001, ANN202
        seen["backend"] = config.backend
        raise _Reached

    monkeypatch.setattr(stream.scorer.engine, "ScoringEngine", fake_engine)
    result = CliRunner().invoke(app, ["serve", "--ckpt", "m", "--backend", "torch"])
    assert isinstance(result.exception, _Reached), result.output
    assert seen == {"backend": "torch"}


def test_backfill_resolves_backend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import models.checkpoint

    class Model:
        class cfg:  # noqa: N801
            head_dim = 16

    seen: dict = {}

    def fake_resolve(choice, device, head_dim):  # noqa: ANN001, ANN202
        seen.update(choice=choice, device=device.type, head_dim=head_dim)
        raise _Reached

    monkeypatch.setattr(models.checkpoint, "load_checkpoint", lambda ckpt, device: (Model(), None, {}))
    monkeypatch.setattr(kernels.dispatch, "resolve_backend", fake_resolve)
    result = CliRunner().invoke(app, ["backfill", str(tmp_path / "u.data"), "--ckpt", "m", "--device", "cpu",
                                      "--backend", "triton"])
    assert isinstance(result.exception, _Reached), result.output
    assert seen == {"choice": "triton", "device": "cpu", "head_dim": 16}


def test_train_passes_backend_and_leaves_the_default_to_the_config(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    data = tmp_path / "events.csv"
    data.write_text("user_id,item_id,timestamp\n" + "".join(f"u{u},i{i},{i}\n" for u in range(3) for i in range(4)))
    seen: list = []

    def fake_build(preset, num_items, model=None, train=None):  # noqa: ANN001, ANN202
        seen.append(dict(train or {}))
        raise _Reached

    monkeypatch.setattr(models.preset, "build_configs", fake_build)
    for extra in (["--backend", "triton"], []):
        result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "m"), *extra])
        assert isinstance(result.exception, _Reached), result.output
    assert seen[0]["backend"] == "triton" and "backend" not in seen[1]


@pytest.mark.parametrize("command", ["train", "eval", "recommend", "worker", "serve", "backfill"])
def test_help_lists_backend(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "--backend" in result.output


def test_a_bad_backend_is_refused_by_the_config() -> None:
    from stream.worker import WorkerConfig

    with pytest.raises(ValueError, match="backend"):
        WorkerConfig(ckpt=Path("m"), backend="cuda")
