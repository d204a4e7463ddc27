"""Truncated backpropagation through long histories: each training sequence cut into consecutive windows of
`window` inputs, each with the state of every event before it, refreshed once per epoch with the weights of
the moment (`window_end: tiles`).

A 10^4-event user otherwise trains on its last window only, or pays for its whole prefix on every step: a
window ending at a random target folded ~5,000 events first, 60% of a step, and on the lifelong world reached
in 11 epochs (900 s) the training loss tiles reach in 2. With tiles an epoch covers every position once, as
the baselines' windows do, at one fold of the data per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.state import UserStates
from models.training.data import EncodedSequence, to_batch
from models.vista import VistaModel

REFRESH_USERS = 64  # users folded side by side when the states are refreshed


@dataclass
class Tile:
    """Inputs [start, stop) of one sequence (targets start+1 .. stop) and the state after its events [:start]."""

    seq: EncodedSequence
    start: int
    stop: int
    state: UserStates  # batch of 1

    def __len__(self) -> int:
        return self.stop - self.start


def tiles(model: VistaModel, seqs: list[EncodedSequence], window: int) -> list[Tile]:
    """Every window of every sequence that holds a training target, with its state computed now (no gradients;
    the model's current mode, as the per-step fold of a prefix has it)."""
    out: list[Tile] = []
    for first in range(0, len(seqs), REFRESH_USERS):
        group = seqs[first : first + REFRESH_USERS]
        inputs = [len(s) - 1 for s in group]
        states = model.init_state(len(group))
        for start in range(0, max(inputs), window):
            for row, s in enumerate(group):
                stop = min(start + window, inputs[row])
                if start < stop and bool(s.learnable()[start + 1 : stop + 1].any()):
                    out.append(Tile(s, start, stop, states.select(torch.tensor([row]))))
            segments = [s.slice(min(start + window, n), min(start, n)) for s, n in zip(group, inputs)]
            states = model.update(states, to_batch(segments))
    return out
