"""The plain-line fast path of the file parsers decides every line exactly as the strict validation does: the
same event, or the same bad-record reason."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.bad_records import InvalidRecord, validate_event
from schemas.events import MAX_TIMESTAMP, Interaction
from schemas.interaction_formats import CsvHeader, _int, csv_parser, parse_movielens

ID = st.one_of(st.text(min_size=0, max_size=4), st.text(alphabet=" \t\x1c\u00a0\u2003abc", max_size=3),
               st.text(min_size=126, max_size=130, alphabet="xy"), st.sampled_from(["1", "u 1", " u", "u "]))
NUMBER = st.one_of(st.integers(-5, 300).map(str), st.sampled_from([
    "", " 5", "5 ", "+5", "1_0", "1.0", "1.5", "٣", "²", "0005", str(MAX_TIMESTAMP), str(MAX_TIMESTAMP + 1),
    "881250949.0", "1e3", "nan"]), st.integers(0, 2**45).map(str))


def _strict(user: str, item: str, action: str, timestamp: str) -> Interaction | str:
    """The reference: the strict path alone (integers by `_int`, then pydantic)."""
    try:
        a, t = _int(action, "action"), _int(timestamp, "timestamp")
        return Interaction.of(validate_event({"user_id": user, "item_id": item, "action": a, "timestamp": t}))
    except InvalidRecord as exc:
        return exc.reason


def _decided(parse, line: str) -> Interaction | str:  # noqa: ANN001
    try:
        return parse(line)
    except InvalidRecord as exc:
        return exc.reason


@settings(max_examples=400, deadline=None)
@given(ID, ID, NUMBER, NUMBER)
def test_movielens_lines_decide_as_the_strict_path(user: str, item: str, action: str, timestamp: str) -> None:
    fields = (user, item, action, timestamp)
    if any(c in f for f in fields for c in "\t\r\n"):
        return  # not one line of four fields
    assert _decided(parse_movielens, "\t".join(fields)) == _strict(*fields)


@settings(max_examples=400, deadline=None)
@given(ID, ID, NUMBER, NUMBER)
def test_csv_lines_decide_as_the_strict_path(user: str, item: str, action: str, timestamp: str) -> None:
    fields = (user, item, timestamp, action)
    if any(c in f for f in fields for c in ',"\r\n'):
        return
    parse = csv_parser(CsvHeader(("user_id", "item_id", "timestamp", "action"), True))
    assert _decided(parse, ",".join(fields)) == _strict(user, item, action or "0", timestamp)
