"""Tiles (`window_end: tiles`): every window of every sequence that holds a training target, once, each with the
state of exactly the events before it, as folding that prefix from scratch gives."""

from __future__ import annotations

import torch

from models.config import ModelConfig
from models.training.data import EncodedSequence, to_batch, with_objective_targets
from models.training.losses import split_windows
from models.training.tiles import tiles
from models.vista import VistaModel


def _seqs() -> list[EncodedSequence]:
    g = torch.Generator().manual_seed(0)
    return [EncodedSequence(f"u{i}", torch.randint(1, 21, (n,), generator=g), torch.zeros(n, dtype=torch.long),
                            torch.arange(n) * 60) for i, n in enumerate([50, 23, 7])]


def test_tiles_cover_every_target_once_with_the_state_before_them() -> None:
    torch.manual_seed(0)
    model = VistaModel(ModelConfig(num_items=20, dim=8, heads=2)).eval()
    seqs = with_objective_targets(_seqs(), 2)
    cut = tiles(model, seqs, 8)
    for s in seqs:
        mine = sorted((t.start, t.stop) for t in cut if t.seq.user == s.user)
        covered = [p for start, stop in mine for p in range(start + 1, stop + 1)]
        assert len(covered) == len(set(covered)) and all(stop - start <= 8 for start, stop in mine)
        targets = set(s.learnable().nonzero().flatten().tolist()) - {0}
        assert targets <= set(covered), s.user
    for t in cut:
        folded = model.update(model.init_state(1), to_batch([t.seq.slice(t.start)]))
        assert int(t.state.count) == t.start
        torch.testing.assert_close(t.state.memory, folded.memory, rtol=1e-5, atol=1e-6)
    states, batch, targets, learn = split_windows(model, cut[:3], 8)
    assert batch.lengths.tolist() == [len(t) for t in cut[:3]]
    assert torch.equal(states.count, torch.tensor([t.start for t in cut[:3]]))
