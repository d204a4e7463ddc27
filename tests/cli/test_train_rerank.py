"""`vista train --rerank`: the stack, then Δ on it; the checkpoint is the whole model with Δ's validation verdict
(what the scorer reads to decide what it serves) and the stack alone is kept beside it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.stream.util import ML100K


@pytest.mark.slow
def test_train_with_the_reranker_writes_the_whole_model_and_its_verdict(tmp_path: Path) -> None:
    data = tmp_path / "small.data"
    with ML100K.open() as src:
        data.write_text("".join(next(src) for _ in range(8000)))
    out = subprocess.run([sys.executable, "-m", "cli", "train", "--data", str(data), "--out", str(tmp_path / "m"),
                          "--time-budget", "4", "--epochs", "2", "--rerank"],
                         capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    stack = json.loads((tmp_path / "m" / "stack" / "meta.json").read_text())
    assert meta["model_version"] == report["reranker"]["model_version"] != stack["model_version"]
    assert set(meta["reranker"]) == {"passed", "rerank_top", "val_NDCG@10", "stack_val_NDCG@10"}
    assert json.loads((tmp_path / "m" / "config.json").read_text())["target_readout"] is True
    assert json.loads((tmp_path / "m" / "stack" / "config.json").read_text())["target_readout"] is False
