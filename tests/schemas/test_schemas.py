"""Boundary validation of events and score requests, and the stored-row conversion."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from schemas.events import InteractionEvent
from schemas.requests import ScoreRequest
from stream.rows import rows_from_states, states_from_rows, summary_from_rows
from tests.helpers import batch_of, random_sequences, small_model


def test_event_accepts_int_ids_and_defaults() -> None:
    e = InteractionEvent.model_validate({"user_id": 7, "item_id": "i9", "timestamp": 100})
    assert (e.user_id, e.item_id, e.action, e.context) == ("7", "i9", 0, None)


@pytest.mark.parametrize(
    "payload,field",
    [
        ({"item_id": "1", "timestamp": 1}, "user_id"),
        ({"user_id": "u", "item_id": "1", "timestamp": -1}, "timestamp"),
        ({"user_id": "u", "item_id": "1", "timestamp": 1.5}, "timestamp"),
        ({"user_id": "u", "item_id": "1", "timestamp": 2**50}, "timestamp"),
        ({"user_id": "u", "item_id": "1", "timestamp": 1, "action": 256}, "action"),
        ({"user_id": True, "item_id": "1", "timestamp": 1}, "user_id"),
        ({"user_id": "", "item_id": "1", "timestamp": 1}, "user_id"),
        ({"user_id": "u" * 129, "item_id": "1", "timestamp": 1}, "user_id"),
        ({"user_id": "u", "item_id": "1", "timestamp": 1, "surprise": 1}, "surprise"),
    ],
)
def test_bad_events_name_the_field(payload: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        InteractionEvent.model_validate(payload)
    assert field in str(info.value)


def test_score_request_limits() -> None:
    assert ScoreRequest(user_id="u", candidates=[1, "2"]).candidates == ["1", "2"]
    with pytest.raises(ValidationError, match="at least 1"):
        ScoreRequest(user_id="u", candidates=[])
    with pytest.raises(ValidationError, match="duplicate candidates"):
        ScoreRequest(user_id="u", candidates=["a", "b", "a"])
    with pytest.raises(ValidationError, match="exceed the limit of 3"):
        ScoreRequest.model_validate({"user_id": "u", "candidates": ["a", "b", "c", "d"]},
                                    context={"max_candidates": 3})
    with pytest.raises(ValidationError):
        ScoreRequest(user_id="u", candidates=["a"], top_k=0)


def test_rows_round_trip_states_and_summary() -> None:
    model = small_model(seed=11)
    gen = torch.Generator().manual_seed(11)
    states = model.update(model.init_state(3), batch_of(random_sequences(3, 12, 40, gen)))
    summary = model.summarize(states)
    rows = rows_from_states(["a", "b", "c"], "v1", states, summary, [{"events:0": 5}] * 3)
    back = states_from_rows(rows)
    assert torch.equal(back.memory, states.memory)  # fp32 state is stored exactly
    assert torch.equal(back.count, states.count) and torch.equal(back.last_ts, states.last_ts)
    assert torch.equal(back.recent_items, states.recent_items)
    assert torch.equal(back.recent_h, states.recent_h.half().float())
    stored = summary_from_rows(rows)
    assert torch.equal(stored.seeds, summary.seeds.half().float())  # seeds stored fp16
    assert rows[0].applied_offsets == {"events:0": 5}
