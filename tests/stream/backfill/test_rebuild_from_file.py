"""A user backfilled from a file, then streamed live, whose row went corrupt, is rebuilt exactly: the file's
events up to the cut its backfill used, then the user's live events after the cut (`vista backfill FILE
--rebuild-user U`). Rebuilt from the file alone, the row would silently miss every live event."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app as cli
from infra.settings import InfraSettings
from models.checkpoint import load_checkpoint
from stream.store import SummaryStore
from stream.worker import WorkerConfig
from tests.stream.util import assert_rows_match, new_topic, produce, recompute, unique, worker_caught_up

pytestmark = pytest.mark.integration


def _vista(*args: str) -> dict:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{"):])


def test_a_file_backfilled_user_is_rebuilt_with_its_live_events(
        tmp_path: Path, infra_stack: InfraSettings, cassandra_session, checkpoint: Path, ml100k_events) -> None:
    victim = Counter(e.user_id for e in ml100k_events[:20_000]).most_common(1)[0][0]
    mine = [e for e in ml100k_events[:20_000] if e.user_id == victim]
    others = [e for e in ml100k_events[:4000] if e.user_id != victim]
    q = len(mine) // 4  # each part holds others' events and a quarter of the victim's, each user in order
    history, live1, live2, live3 = (others[:2500] + mine[:q], others[2500:3000] + mine[q:2 * q],
                                    others[3000:3500] + mine[2 * q:3 * q], others[3500:] + mine[3 * q:])
    counts = [Counter(e.user_id for e in part) for part in (history, live1, live2, live3)]
    topic = new_topic(infra_stack, "rebuild-file", partitions=2)
    produce(infra_stack, topic, history)
    log = tmp_path / "history.jsonl"
    log.write_text("".join(e.model_dump_json(exclude_none=True) + "\n" for e in history))
    model, vocab, meta = load_checkpoint(checkpoint)
    version = meta["model_version"]
    store = SummaryStore(cassandra_session)
    _vista("backfill", str(log), "--ckpt", str(checkpoint), "--handover-topic", topic, "--no-progress")

    config = WorkerConfig(ckpt=checkpoint, topic=topic, dlq_topic=unique("dlq"), group_id=unique("group"),
                          batch_max_events=300, batch_max_ms=50, metrics_port=0)
    produce(infra_stack, topic, live1)
    with worker_caught_up(config, infra_stack):
        pass
    row = store.read([victim], version)[victim]  # damaged: one byte of its state flipped, written over the good one
    row.state = row.state[:-1] + bytes([row.state[-1] ^ 0xFF])
    row.generation += 1
    store.write([row])
    produce(infra_stack, topic, live2)
    with worker_caught_up(config, infra_stack) as worker:
        assert worker.metrics.events.labels("quarantined")._value.get() == counts[2][victim]

    report = _vista("backfill", str(log), "--ckpt", str(checkpoint), "--handover-topic", topic,
                    "--rebuild-user", victim, "--no-progress")
    assert report["applied"] == counts[0][victim]
    assert report["live_part"]["applied"] == counts[1][victim] + counts[2][victim]
    everything = history + live1 + live2
    expected = recompute(model, vocab, version, [e for e in everything if e.user_id == victim])
    assert_rows_match(store.read([victim], version), expected, model)

    produce(infra_stack, topic, live3)  # the worker goes on from the rebuilt row, skipping what it applied
    with worker_caught_up(config, infra_stack):
        pass
    expected = recompute(model, vocab, version, everything + live3)
    assert_rows_match(store.read(expected, version), expected, model)
