"""Checkpoints (safetensors + JSON, no pickle) and model_version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.checkpoint import load_checkpoint, model_version, save_checkpoint
from models.vocab import ItemVocab
from tests.helpers import batch_of, random_sequences, small_model


def _vocab() -> ItemVocab:
    return ItemVocab([f"item{i}" for i in range(40)], oov_buckets=4)


def test_round_trip_gives_the_same_scores(tmp_path: Path) -> None:
    model, vocab = small_model(seed=21), _vocab()
    version = save_checkpoint(tmp_path, model, vocab, {"note": "x"})
    loaded, vocab2, meta = load_checkpoint(tmp_path)
    assert meta["model_version"] == version and meta["note"] == "x"
    assert vocab2.items == vocab.items and vocab2.oov_buckets == vocab.oov_buckets
    assert loaded.cfg == model.cfg
    gen = torch.Generator().manual_seed(21)
    events = batch_of(random_sequences(2, 15, 40, gen, min_len=1))
    cands = torch.arange(1, 41)
    want = model.score(model.summarize(model.update(model.init_state(2), events)), cands)
    got = loaded.score(loaded.summarize(loaded.update(loaded.init_state(2), events)), cands)
    assert torch.equal(got, want)
    assert not any(p.suffix in (".pt", ".pkl", ".bin") for p in tmp_path.iterdir())


def test_model_version_tracks_weights_config_and_vocab() -> None:
    model, vocab = small_model(seed=22), _vocab()
    base = model_version(model, vocab)
    assert model_version(small_model(seed=22), vocab) == base  # deterministic
    with torch.no_grad():
        model.summarizer.seeds[0, 0] += 1e-6
    assert model_version(model, vocab) != base
    assert model_version(small_model(seed=22, recent=5), vocab) != base
    assert model_version(small_model(seed=22), ItemVocab(vocab.items[::-1], 4)) != base


def test_tampered_checkpoint_is_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, small_model(seed=23), _vocab())
    meta = json.loads((tmp_path / "meta.json").read_text())
    meta["model_version"] = "0" * 16
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="model_version"):
        load_checkpoint(tmp_path)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_checkpoint(tmp_path)
