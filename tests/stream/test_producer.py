"""`vista produce`: dataset files replayed in timestamp order (stable ties), keyed by user."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from infra.settings import InfraSettings
from stream.producer import encode_event, load_events
from tests.stream.util import end_offsets, new_topic


def test_load_events_orders_by_timestamp_with_ties_in_file_order(tmp_path: Path) -> None:
    data = tmp_path / "events.jsonl"
    rows = [("a", "1", 30), ("b", "2", 10), ("a", "3", 10), ("c", "4", 20), ("b", "5", 10)]
    data.write_text("".join(json.dumps({"user_id": u, "item_id": i, "timestamp": t}) + "\n" for u, i, t in rows))
    events = load_events(data)
    assert [e.item_id for e in events] == ["2", "3", "5", "4", "1"]
    assert [e.item_id for e in load_events(data, limit=2, user_prefix="x-")] == ["2", "3"]
    assert load_events(data, limit=2, user_prefix="x-")[0].user_id == "x-b"
    key, value = encode_event(events[0])
    assert key == b"b" and json.loads(value) == {"user_id": "b", "item_id": "2", "action": 0, "timestamp": 10}


def test_load_events_leaves_bad_lines_out_instead_of_repairing_them(tmp_path: Path) -> None:
    data = tmp_path / "u.data"
    data.write_text("1\t10\t5\t100\n2\t11\t1.5\t50\nbroken\n3\t12\t2\t75\n")
    assert [(e.user_id, e.action) for e in load_events(data)] == [("3", 2), ("1", 5)]


def test_produce_rejects_a_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["produce", "--data", str(tmp_path / "nope.data")])
    text = " ".join(result.output.replace("│", " ").split())  # the error box wraps long paths
    assert result.exit_code != 0 and "does not exist" in text


@pytest.mark.integration
def test_vista_produce_sends_keyed_events_in_order(infra_stack: InfraSettings, tmp_path: Path) -> None:
    from infra.kafka import make_consumer
    from tests.stream.util import ML100K

    topic = new_topic(infra_stack, "produce", partitions=3)
    result = CliRunner().invoke(app, ["produce", "--data", str(ML100K), "--limit", "300", "--topic", topic,
                                      "--rate", "5000"])
    assert result.exit_code == 0, result.output
    assert "sent 300 events" in result.output
    assert sum(end_offsets(infra_stack, topic).values()) == 300
    consumer = make_consumer(infra_stack, topic, consumer_timeout_ms=5000)
    try:
        got = list(consumer)
    finally:
        consumer.close()
    expected = load_events(ML100K, limit=300)
    per_user: dict[str, list[str]] = {}
    for m in sorted(got, key=lambda m: (m.partition, m.offset)):
        event = json.loads(m.value)
        assert m.key == event["user_id"].encode()
        per_user.setdefault(event["user_id"], []).append(event["item_id"])
    want: dict[str, list[str]] = {}
    for e in expected:
        want.setdefault(e.user_id, []).append(e.item_id)
    assert per_user == want  # every user's events in one partition, in replay order
