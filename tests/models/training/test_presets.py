"""Presets: the defaults are the general preset, every preset builds and trains a step, and model_version
is stable when a config field with a default is added."""

from __future__ import annotations

import pytest
import torch

from models.checkpoint import model_version
from models.config import ModelConfig
from models.preset import build_configs, load_preset, preset_names
from models.training.budget import NegativeSampler
from models.training.data import EncodedSequence
from models.training.trainer import TrainConfig, train_step
from models.vista import VistaModel
from models.vocab import ItemVocab

NUM_ITEMS = 30


def test_the_defaults_are_the_general_preset() -> None:
    general = load_preset("general")
    assert ModelConfig(num_items=NUM_ITEMS) == ModelConfig(num_items=NUM_ITEMS, **general.model)
    assert TrainConfig() == TrainConfig(**general.train)
    assert general.model and general.train, "the general preset spells its values out"


def test_the_documented_presets_exist_and_unknown_ones_are_refused() -> None:
    assert {"general", "beauty", "synthetic", "target", "paper-faithful"} <= set(preset_names())
    with pytest.raises(ValueError, match="known presets"):
        load_preset("no-such-preset")


@pytest.mark.parametrize("name", preset_names())
def test_each_preset_trains_one_step(name: str) -> None:
    torch.manual_seed(0)
    cfg, tcfg = build_configs(name, NUM_ITEMS, model={"dim": 16, "heads": 2, "target_heads": 2},
                              train={"window": 8, "negatives": 8})
    model = VistaModel(cfg).train()
    g = torch.Generator().manual_seed(0)
    seqs = [EncodedSequence(user=f"u{i}", items=torch.randint(1, NUM_ITEMS + 1, (10,), generator=g),
                            actions=torch.zeros(10, dtype=torch.long), timestamps=torch.arange(10) * 60)
            for i in range(4)]
    before = {k: v.clone() for k, v in model.stack.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr)
    logs = train_step(model, seqs, NegativeSampler(seqs, NUM_ITEMS, g), tcfg, NUM_ITEMS, g, opt)
    assert torch.isfinite(torch.tensor(logs["loss"])), logs
    assert ("cut" in logs) == (cfg.target_readout or cfg.memory_readout)
    assert any(not torch.equal(v, before[k]) for k, v in model.stack.state_dict().items())


class _WithNewKnob(ModelConfig):
    """ModelConfig as a later release might have it: one more field, whose default keeps old models as they were."""

    future_knob: bool = False


def test_a_new_defaulted_field_keeps_model_version() -> None:
    torch.manual_seed(0)
    model = VistaModel(ModelConfig(num_items=NUM_ITEMS, dim=16, heads=2, target_heads=2, recent=3))
    vocab = ItemVocab([str(i) for i in range(1, NUM_ITEMS + 1)], oov_buckets=64)
    before = model_version(model, vocab)
    model.cfg = _WithNewKnob(**model.cfg.model_dump())
    assert model_version(model, vocab) == before, "a defaulted field must not orphan stored rows"
    model.cfg = _WithNewKnob(**model.cfg.model_dump(exclude={"future_knob"}), future_knob=True)
    assert model_version(model, vocab) != before, "a field set away from its default changes the version"
