"""Baselines trained and evaluated through the same data pipeline and protocol as VISTA.

`build_baseline(kind, num_items, **config)` makes one; `train.train_baseline` trains any of them
with the same early-stopping rule (validation NDCG@10, never test).
"""

from __future__ import annotations

from models.baselines.hstu import HSTU, HSTUConfig
from models.baselines.popular import MostPopular
from models.baselines.sasrec import SASRec, SASRecConfig
from models.baselines.sim import SIM, SIMConfig

NEURAL = {"sasrec": (SASRec, SASRecConfig), "hstu": (HSTU, HSTUConfig), "sim": (SIM, SIMConfig)}


def build_baseline(kind: str, num_items: int, **config):
    """A neural baseline from its kind name and config overrides (validated by its pydantic config)."""
    if kind not in NEURAL:
        raise ValueError(f"unknown baseline {kind!r}; expected one of {sorted(NEURAL)}")
    model_cls, cfg_cls = NEURAL[kind]
    return model_cls(cfg_cls(num_items=num_items, **config))


__all__ = ["HSTU", "HSTUConfig", "MostPopular", "NEURAL", "SASRec", "SASRecConfig", "SIM", "SIMConfig",
           "build_baseline"]
