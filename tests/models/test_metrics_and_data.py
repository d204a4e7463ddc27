"""Ranking metrics against hand-computed cases; the leave-one-out split never leaks the test item."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch

from models.training.data import encode, leave_one_out, load_dataset
from models.training.metrics import personalization, ranking_metrics, target_ranks
from tests.helpers import DATA_DIR


def test_target_ranks_count_ties_against_the_target() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3], [1.0, 1.0, 0.0, 2.0]])
    assert target_ranks(scores, torch.tensor([2, 0])).tolist() == [1, 2]


def test_metrics_by_hand() -> None:
    m = ranking_metrics(torch.tensor([0, 3, 12]), ks=(1, 5, 10))
    assert m["HR@1"] == pytest.approx(1 / 3)
    assert m["HR@5"] == pytest.approx(2 / 3)
    assert m["NDCG@5"] == pytest.approx((1.0 + 1 / math.log2(5)) / 3)
    assert m["HR@10"] == pytest.approx(2 / 3)
    assert m["MRR"] == pytest.approx((1 + 1 / 4 + 1 / 13) / 3)


def test_personalization_of_a_collapsed_model_is_zero() -> None:
    same = torch.arange(20.0)[None].expand(8, -1)
    p = personalization(same)
    assert p["across_user_variance_share"] == pytest.approx(0.0, abs=1e-12)
    assert p["distinct_top10_items"] == 10
    varied = torch.randn(8, 20, generator=torch.Generator().manual_seed(0))
    assert personalization(varied)["across_user_variance_share"] > 0.5


def test_leave_one_out_never_feeds_the_held_out_item(tmp_path: Path) -> None:
    ds = load_dataset(Path(DATA_DIR) / "ml-100k" / "u.data")
    assert (len(ds.sequences), len(ds.vocab), ds.num_events) == (943, 1682, 100_000)
    seqs = encode(ds)
    split = leave_one_out(seqs)
    full = {s.user: s for s in seqs}
    train = {s.user: s for s in split.train}
    for hist, target in split.test:
        s = full[hist.user]
        assert len(hist) == len(s) - 1 and target == int(s.items[-1])
        assert len(train[hist.user]) == len(s) - 2  # training input stops before the validation item
    for hist, target in split.valid:
        assert len(hist) == len(full[hist.user]) - 2 and target == int(full[hist.user].items[-2])


def test_csv_ties_keep_file_order(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("user_id,item_id,timestamp\nu,b,5\nu,a,5\nu,c,1\nv,a,3\n")
    ds = load_dataset(path)
    assert [s.items for s in ds.sequences] == [["c", "b", "a"], ["a"]]


def test_bad_lines_are_left_out_counted_and_never_rounded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "u.data"
    path.write_text("1\t10\t5\t100\n1\t11\t1.5\t101\n1\t12\n1\t13\t4\t102.0\n")
    with caplog.at_level(logging.WARNING):
        ds = load_dataset(path)
    assert [(s.items, s.actions, s.timestamps) for s in ds.sequences] == [(["10", "13"], [5, 4], [100, 102])]
    assert [(b.location, b.reason) for b in ds.bad] == [("u.data:2", "wrong_type"), ("u.data:3", "wrong_field_count")]
    assert "2 of 4 records of u.data are bad" in caplog.text
