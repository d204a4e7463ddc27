"""The evaluation protocol switch: `exclude_seen` masks the user's consumed items (except the target) or
leaves every item rankable; validation (every family's early stopping) follows the config's protocol."""

from __future__ import annotations

import torch

from models.training.budget import BudgetConfig
from models.training.data import EncodedSequence, LeaveOneOut
from models.training.evaluate import evaluate
from models.training.loop import validation


def _case(items: list[int], target: int) -> tuple[EncodedSequence, int]:
    n = len(items)
    return EncodedSequence("u", torch.tensor(items), torch.zeros(n, dtype=torch.long), torch.arange(n)), target


def _prefers_seen(histories: list[EncodedSequence]) -> torch.Tensor:
    """Scores 5 items: the consumed ones high (item 4 highest), the others low."""
    scores = torch.zeros(len(histories), 5)
    for row, h in enumerate(histories):
        scores[row, h.items - 1] = h.items.float()
    return scores


def test_masking_spares_only_the_target_and_the_switch_turns_it_off() -> None:
    cases = [_case([2, 4, 3], target=3)]  # the target was consumed before (a return)
    masked = evaluate(_prefers_seen, cases, num_items=5)
    open_ = evaluate(_prefers_seen, cases, num_items=5, exclude_seen=False)
    assert masked["HR@1"] == 1.0  # items 2 and 4 masked: the return is handed over
    assert open_["HR@1"] == 0.0 and open_["HR@5"] == 1.0  # item 4 outranks it once nothing is masked


def test_validation_follows_the_protocol_of_the_budget() -> None:
    split = LeaveOneOut([], [_case([2, 4, 3], target=3)], [])
    assert validation(lambda: _prefers_seen, split, 5, BudgetConfig())()["HR@1"] == 1.0
    assert validation(lambda: _prefers_seen, split, 5, BudgetConfig(exclude_seen=False))()["HR@1"] == 0.0
