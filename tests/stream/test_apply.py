"""The pure update core shared by the worker and the backfill (stream/apply.py), without any infrastructure:
redelivered offsets are skipped, a row of another model_version is refused, an empty batch writes nothing,
and two micro-batches equal one."""

from __future__ import annotations

import pytest
import torch

from models.vocab import ItemVocab
from schemas.events import InteractionEvent
from stream.apply import SourcedEvent, apply_events
from stream.rows import states_from_rows
from tests.helpers import rel_err, small_model

VOCAB = ItemVocab([str(i) for i in range(1, 41)], oov_buckets=4)


def _events(user: str, n: int, source: str = "events:0", start: int = 0) -> list[SourcedEvent]:
    return [SourcedEvent(InteractionEvent(user_id=user, item_id=str(1 + (start + i) % 40), action=1,
                                          timestamp=1000 + 60 * (start + i)), source, start + i) for i in range(n)]


def test_an_empty_batch_writes_nothing() -> None:
    result = apply_events(small_model(), VOCAB, "v1", {}, [])
    assert result.rows == [] and result.applied == 0 and result.skipped == 0


def test_redelivered_offsets_are_skipped_and_never_applied_twice() -> None:
    model = small_model(seed=3)
    first = apply_events(model, VOCAB, "v1", {}, _events("u", 5))
    row = first.rows[0]
    assert row.applied_offsets == {"events:0": 4} and row.n == 5
    again = apply_events(model, VOCAB, "v1", {"u": row}, _events("u", 8))  # offsets 0-4 redelivered, 5-7 new
    assert (again.applied, again.skipped) == (3, 5)
    assert again.rows[0].n == 8 and again.rows[0].applied_offsets == {"events:0": 7}
    replay = apply_events(model, VOCAB, "v1", {"u": again.rows[0]}, _events("u", 8))
    assert replay.rows == [] and replay.skipped == 8, "a full redelivery changes nothing"


def test_a_row_of_another_model_version_is_refused() -> None:
    model = small_model(seed=4)
    row = apply_events(model, VOCAB, "v1", {}, _events("u", 3)).rows[0]
    with pytest.raises(ValueError, match="never continued by another model"):
        apply_events(model, VOCAB, "v2", {"u": row}, _events("u", 5))


def test_two_micro_batches_equal_one_over_every_event() -> None:
    model = small_model(seed=5)
    events = _events("a", 9) + _events("b", 4, source="events:1")
    whole = {r.user_id: r for r in apply_events(model, VOCAB, "v1", {}, events).rows}
    rows: dict = {}
    for part in (events[:6], events[6:]):
        rows.update({r.user_id: r for r in apply_events(model, VOCAB, "v1", rows, part).rows})
    for user in ("a", "b"):
        split, full = states_from_rows([rows[user]]), states_from_rows([whole[user]])
        assert rel_err(split.memory, full.memory) <= 1e-5
        assert torch.equal(split.count, full.count) and rows[user].applied_offsets == whole[user].applied_offsets
