"""The worker's batched decoder decides every record as the one decoder does (`decode_record`): the same
events, and the same dead letters with the same reasons, in the same order."""

from __future__ import annotations

import json
import time
from typing import NamedTuple

from hypothesis import given, settings
from hypothesis import strategies as st

from stream.decode import decode_batch, decode_record


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


IDS = st.one_of(st.text(max_size=4), st.sampled_from([" u", "u ", "u1", "\u00a0x", "x" * 128, "x" * 129]),
                st.integers(-3, 10**20), st.booleans(), st.none(), st.floats(allow_nan=False))
NUMBERS = st.one_of(st.integers(-3, 300), st.integers(2**41 - 2, 2**41 + 2), st.integers(2**62, 2**66),
                    st.sampled_from([1.0, 1.5, "5", True, None, int(time.time()) + 10**7]))
KEYS = st.sampled_from(["user_id", "item_id", "timestamp", "action", "context", "color"])


@st.composite
def values(draw) -> bytes | None:  # noqa: ANN001
    kind = draw(st.sampled_from(["event", "event", "event", "raw", "none"]))
    if kind == "none":
        return draw(st.sampled_from([None, b"", b"x" * 20_000]))
    if kind == "raw":
        return draw(st.sampled_from([b"{broken", b"[1, 2]", b"\xff\xfe", b'{"user_id": "a", "user_id": "b"}',
                                     b'{"user_id":"u","item_id":"i","timestamp":NaN}', b"null", b'"text"']))
    fields = {"user_id": draw(IDS), "item_id": draw(IDS), "timestamp": draw(NUMBERS)}
    if draw(st.booleans()):
        fields["action"] = draw(NUMBERS)
    for extra in draw(st.lists(KEYS, max_size=2)):
        fields[extra] = draw(st.one_of(IDS, NUMBERS, st.just({"a": 1})))
    for missing in draw(st.lists(st.sampled_from(["user_id", "item_id", "timestamp"]), max_size=1)):
        fields.pop(missing, None)
    return json.dumps(fields).encode()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(values(), st.sampled_from(["none", "match", "other"])), min_size=1, max_size=12))
def test_batched_decoding_equals_the_one_decoder(drawn: list) -> None:
    records = []
    for offset, (value, key_kind) in enumerate(drawn):
        user = None
        try:
            user = json.loads(value).get("user_id") if value else None
        except (ValueError, AttributeError):
            pass
        key = {"none": None, "match": str(user).encode() if user is not None else b"u", "other": b"someone"}[key_kind]
        records.append(Record("events", offset % 3, offset, key, value))
    _same_decisions(records)


def _fields(e) -> tuple:  # noqa: ANN001 - a SourcedEvent; context is not part of the state update
    return e.event.user_id, e.event.item_id, e.event.action, e.event.timestamp, e.source, e.offset


def _same_decisions(records: list[Record]) -> None:
    events, letters = decode_batch(records, 16_384)
    expected = [decode_record(r.topic, r.partition, r.offset, r.key, r.value, 16_384) for r in records]
    assert [_fields(e) for e in events] == [_fields(d) for d in expected if not hasattr(d, "reason")]
    assert letters == [d for d in expected if hasattr(d, "reason")]


def test_hand_picked_records_decide_as_the_one_decoder() -> None:
    values = [b'{"user_id":"u","item_id":"i","timestamp":5,"context":{"a":1}}',
              b'{"user_id":7,"item_id":"i","timestamp":5,"action":2}', b'{"user_id":" u","item_id":"i","timestamp":5}',
              b'{"user_id":"u","item_id":"i","timestamp":5.0}', b'{"user_id":"u","item_id":"i","timestamp":9e99}',
              b'{"user_id":"u","item_id":"i","timestamp":99999999999999}', b'{"user_id":"u","item_id":"i"}',
              b'{"user_id":"u","item_id":"i","timestamp":5,"action":256}', b"", None, b"x" * 20_000,
              b'{"user_id":"u","item_id":"i","timestamp":5,"color":1}', b'{"user_id":true,"item_id":"i","timestamp":5}']
    keys = [None, b"7", b"u", None, None, None, None, b"u", None, None, None, None, b"x"]
    _same_decisions([Record("events", i % 2, i, k, v) for i, (k, v) in enumerate(zip(keys, values))])
