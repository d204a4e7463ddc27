"""Named presets: small YAML files of ModelConfig / TrainConfig overrides (models/presets/NAME.yaml).

`general` is what ModelConfig() and TrainConfig() default to; every other preset, and every experiment
row, is a preset plus overrides, so one model is "the" model and an experiment says only what it changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from models.config import ModelConfig

if TYPE_CHECKING:
    from models.training.trainer import TrainConfig

PRESET_DIR = Path(__file__).parent / "presets"
DEFAULT_PRESET = "general"


class Preset(BaseModel):
    """One preset file: architecture and training overrides of the defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    model: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    rerank: dict[str, Any] | None = Field(default=None, description="after the stack, train the residual "
                                          "reranker Δ with these RerankConfig overrides (None: the stack alone)")


def preset_names() -> list[str]:
    """Every preset shipped with the package, sorted."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> Preset:
    """The preset `name`; a clear error listing the known ones otherwise."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(preset_names())}")
    raw = yaml.safe_load(path.read_text()) or {}
    return Preset(name=name, **raw)


def build_configs(name: str, num_items: int, *, model: dict[str, Any] | None = None,
                  train: dict[str, Any] | None = None, train_defaults: dict[str, Any] | None = None
                  ) -> tuple[ModelConfig, "TrainConfig"]:
    """ModelConfig and TrainConfig of preset `name` with `model` / `train` overrides on top;
    `train_defaults` (an experiment's budget rules) sit under the preset's training."""
    from models.training.trainer import TrainConfig

    preset = load_preset(name)
    return (ModelConfig(num_items=num_items, **{**preset.model, **(model or {})}),
            TrainConfig(**{**(train_defaults or {}), **preset.train, **(train or {})}))
