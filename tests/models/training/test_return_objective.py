"""The return objective (`return_gap`): every family trains only on targets that are returns, items consumed
before but not within the last `return_gap` events; VISTA's tiles then cover every window that holds one."""

from __future__ import annotations

import torch

from models.baselines import build_baseline
from models.config import ModelConfig
from models.training.budget import BudgetConfig, NegativeSampler, start_run
from models.training.data import EncodedSequence, LeaveOneOut, returns, session_starts, with_objective_targets
from models.training.losses import batch_loss, split_windows
from models.training.tiles import tiles
from models.training.trainer import TrainConfig
from models.vista import VistaModel

#            0  1  2  3  4  5  6  7
ITEMS = [1, 2, 1, 3, 2, 1, 4, 4]


def _seq(items: list[int], user: str = "u") -> EncodedSequence:
    n = len(items)
    return EncodedSequence(user, torch.tensor(items), torch.zeros(n, dtype=torch.long), torch.arange(n) * 60)


def test_returns_are_items_seen_before_but_not_within_the_gap() -> None:
    items = torch.tensor(ITEMS)
    assert returns(items, 1).nonzero().flatten().tolist() == [2, 4, 5]  # item 4 again right away: not a return
    assert returns(items, 2).nonzero().flatten().tolist() == [4, 5]  # position 2 is only 2 events after item 1
    assert returns(items, 3).nonzero().flatten().tolist() == []


def test_session_starts_follow_a_gap_and_combine_with_returns() -> None:
    stamps = torch.tensor([0, 60, 5000, 5060, 5120, 90000, 90030, 200000])
    assert session_starts(stamps, 3600).nonzero().flatten().tolist() == [0, 2, 5, 7]
    seq = EncodedSequence("u", torch.tensor(ITEMS), torch.zeros(8, dtype=torch.long), stamps)
    assert with_objective_targets([seq], None, 3600)[0].learn.nonzero().flatten().tolist() == [0, 2, 5, 7]
    assert with_objective_targets([seq], 1, 3600)[0].learn.nonzero().flatten().tolist() == [2, 5]


def test_every_family_learns_only_the_returns() -> None:
    seqs = with_objective_targets([_seq(ITEMS)], 1)
    for kind in ("sasrec", "hstu"):
        model = build_baseline(kind, num_items=5, dim=8, heads=2, max_len=3)
        examples = model.examples(seqs)
        learned = [int(t) for _, targets in examples for t in targets if t > 0]
        assert sorted(learned) == [1, 1, 2], kind  # the items at positions 2, 5 (item 1) and 4 (item 2)
    sim = build_baseline("sim", num_items=5, dim=8)
    assert sim.examples(seqs)[0][1].tolist() == [2, 4, 5]

    vista = VistaModel(ModelConfig(num_items=5, dim=8, heads=2, target_readout=False))
    _, _, targets, learn = split_windows(vista, seqs, window=16)
    assert targets[0][learn[0]].tolist() == [1, 2, 1]


def test_a_sequence_without_returns_is_left_out_and_the_objective_is_off_by_default() -> None:
    split = LeaveOneOut([_seq(ITEMS, "a"), _seq([1, 2, 3, 4], "b")], [], [])
    model = torch.nn.Linear(2, 2)
    assert [s.user for s in start_run(model, split, 5, BudgetConfig(return_gap=1)).train] == ["a"]
    everyone = start_run(model, split, 5, BudgetConfig()).train
    assert [s.user for s in everyone] == ["a", "b"] and all(s.learn is None for s in everyone)


def test_the_memory_read_learns_on_tiles_of_returns() -> None:
    torch.manual_seed(0)
    model = VistaModel(ModelConfig(num_items=5, dim=8, heads=2, memory_readout=True))
    tcfg = TrainConfig(window=6, window_end="tiles", return_gap=4, cut_points=3, cut_detach_items=False)
    seqs = with_objective_targets([_seq(ITEMS * 8, f"u{i}") for i in range(3)], 4)
    gen = torch.Generator().manual_seed(0)
    loss, logs = batch_loss(model, tiles(model, seqs, 6)[:4], NegativeSampler(seqs, 5, gen), tcfg, 5, gen)
    loss.backward()
    assert logs["cut"] > 0 and logs["seq"] > 0
    assert model.memory_read.out[0].weight.grad.abs().sum() > 0
