"""A short CPU training on ML-100K must personalize (not one list for everyone) and beat most-popular.

This is the guard against the collapse the design note describes: the paper's literal model gave every
user the same top-10. Budget: a few epochs of a reduced-size model (same architecture), fixed seeds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.config import ModelConfig
from models.training.data import encode, leave_one_out, load_dataset
from models.training.evaluate import evaluate, popularity_score_fn, vista_score_fn
from models.training.trainer import TrainConfig, train_vista
from models.vista import VistaModel
from tests.helpers import DATA_DIR

SMOKE_MODEL = dict(dim=48, heads=4, num_seeds=16, recent=10)
SMOKE_TRAIN = dict(epochs=12, time_budget_s=1200.0, batch_size=64, lr=5e-3, window=64, cut_points=2, eval_users=300,
                   patience=12, seed=0)


@pytest.mark.slow
def test_short_training_personalizes_and_beats_most_popular() -> None:
    ds = load_dataset(Path(DATA_DIR) / "ml-100k" / "u.data")
    split = leave_one_out(encode(ds))
    torch.manual_seed(1)  # fixed init: the result must not depend on which tests ran before in this process
    model = VistaModel(ModelConfig(num_items=len(ds.vocab), **SMOKE_MODEL))
    train_vista(model, ds.vocab, split, TrainConfig(**SMOKE_TRAIN), log=lambda record: None)
    vista = evaluate(vista_score_fn(model, ds.vocab), split.test, len(ds.vocab))
    popular = evaluate(popularity_score_fn(split.train, len(ds.vocab)), split.test, len(ds.vocab))
    print({"vista": vista, "most_popular": popular})
    assert vista["diag_distinct_top10_items"] >= 30, vista
    assert vista["diag_across_user_variance_share"] > 0.05, vista
    assert vista["NDCG@10"] > popular["NDCG@10"], (vista, popular)
    assert vista["HR@10"] > popular["HR@10"], (vista, popular)
