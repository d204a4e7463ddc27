"""The model-version lifecycle against the real servers: backfilling -> live -> promoted -> retired.

A migration from version A to version B: both workers run side by side and neither loses an event; the
scorer follows the promotion without a restart; dropping A removes its rows and A never runs again. The
registry is global to a keyspace, so this test runs in a keyspace of its own.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cli.main import app as cli
from infra.settings import InfraSettings
from models.checkpoint import load_checkpoint
from schemas.events import InteractionEvent
from stream.scorer.engine import ScorerConfig, ScoringEngine
from stream.scorer.served import ServedModels
from stream.scorer.service import create_app
from stream.store import SummaryStore
from stream.versions import VersionError, VersionStore
from stream.worker import Worker, WorkerConfig
from tests.stream.util import (CommitWatcher, assert_rows_match, end_offsets, make_checkpoint, new_topic, produce,
                               recompute, running_worker, unique)

pytestmark = pytest.mark.integration


@pytest.fixture()
def own_keyspace(infra_stack: InfraSettings) -> Iterator[InfraSettings]:
    """Settings whose keyspace (tables created, dropped afterwards) no other test shares."""
    from infra.cassandra import apply_schema, connect

    settings = infra_stack.replace(cassandra_keyspace=f"versions_{uuid.uuid4().hex[:12]}")
    apply_schema(settings)
    yield settings
    session = connect(settings, keyspace=None)
    try:
        session.execute(f"DROP KEYSPACE IF EXISTS {settings.cassandra_keyspace}", timeout=60)
    finally:
        session.cluster.shutdown()


def vista(settings: InfraSettings, *args: str) -> str:
    """Run the CLI in-process against `settings`' keyspace; returns stdout (asserts exit 0)."""
    result = CliRunner().invoke(cli, list(args), env={"VISTA_CASSANDRA_KEYSPACE": settings.cassandra_keyspace})
    assert result.exit_code == 0, f"vista {' '.join(args)}: {result.output}"
    return result.stdout


def vista_fails(settings: InfraSettings, *args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env={"VISTA_CASSANDRA_KEYSPACE": settings.cassandra_keyspace})
    assert result.exit_code != 0, f"vista {' '.join(args)} should have failed: {result.output}"
    return result.output


def states(settings: InfraSettings) -> dict[str, tuple[str, bool]]:
    return {v["model_version"]: (v["state"], v["promoted"])
            for v in json.loads(vista(settings, "versions", "list", "--json"))}


def served_version(client: TestClient, user: str, item: str) -> str:
    resp = client.post("/v1/score", json={"user_id": user, "candidates": [item]})
    assert resp.status_code == 200, resp.text
    return resp.json()["model_version"]


def test_a_migration_from_one_version_to_the_next(own_keyspace: InfraSettings, tmp_path: Path,
                                                   ml100k_events: list[InteractionEvent]) -> None:
    settings = own_keyspace
    from infra.cassandra import connect

    session = connect(settings)
    registry = VersionStore(session)
    items = sorted({e.item_id for e in ml100k_events}, key=int)
    version_a, version_b = make_checkpoint(tmp_path / "a", items), make_checkpoint(tmp_path / "b", items)
    ckpt_a, ckpt_b = str(tmp_path / "a"), str(tmp_path / "b")
    events = ml100k_events[:4000]
    topic = new_topic(settings, "migration", partitions=2)
    produce(settings, topic, events[:1500])
    try:
        # A: backfilled from the topic's start, then live; B is unknown: its worker is refused, so is a promotion
        vista(settings, "backfill", f"kafka:{topic}", "--ckpt", ckpt_a, "--no-progress")
        assert states(settings) == {version_a: ("live", False)}
        config_b = WorkerConfig(ckpt=Path(ckpt_b), topic=topic, dlq_topic=unique("dlq"), metrics_port=0,
                                batch_max_ms=50)
        with pytest.raises(VersionError, match="no finished backfill"):
            Worker(config_b, settings)
        assert "only a live version" in vista_fails(settings, "versions", "promote", version_b)
        vista(settings, "versions", "promote", version_a)

        # the scorer loads both checkpoints and serves the promoted one, following promotions
        store = SummaryStore(session)
        engines = [ScoringEngine(ScorerConfig(ckpt=Path(c), version_poll_s=0.2), store) for c in (ckpt_a, ckpt_b)]
        served = ServedModels.choose(engines, pinned=None, promoted=registry.promoted())
        user, item = events[0].user_id, events[0].item_id
        with TestClient(create_app(served, session, promoted_version=registry.promoted)) as client:
            assert served_version(client, user, item) == version_a

            # A streams the rest while B backfills and then streams side by side, each in its own group
            config_a = WorkerConfig(ckpt=Path(ckpt_a), topic=topic, dlq_topic=unique("dlq"), metrics_port=0,
                                    batch_max_ms=50)
            with running_worker(config_a, settings):
                produce(settings, topic, events[1500:2500])
                vista(settings, "backfill", f"kafka:{topic}", "--ckpt", ckpt_b, "--no-progress")
                assert states(settings)[version_b] == ("live", False)
                with running_worker(config_b, settings):
                    produce(settings, topic, events[2500:])
                    target = end_offsets(settings, topic)
                    for version in (version_a, version_b):
                        watcher = CommitWatcher(settings, topic, f"vista-workers-{version}")
                        try:
                            watcher.wait_for(target, timeout=120)
                        finally:
                            watcher.close()
                    status = json.loads(vista(settings, "versions", "status", version_a, "--topic", topic))
                    assert status["workers"]["members"] == 1 and status["workers"]["lag"] == 0
                    assert "worker(s)" in vista_fails(settings, "versions", "drop", version_a, "--yes",
                                                      "--topic", topic)

                vista(settings, "versions", "promote", version_b)
                deadline = time.monotonic() + 10
                while served_version(client, user, item) != version_b:
                    assert time.monotonic() < deadline, "the scorer did not follow the promotion"
                    time.sleep(0.1)

        # no event lost or applied twice by either version
        for ckpt in (ckpt_a, ckpt_b):
            model, vocab, meta = load_checkpoint(Path(ckpt))
            expected = recompute(model, vocab, meta["model_version"], events)
            assert_rows_match(store.read(expected, meta["model_version"]), expected, model)

        # B is promoted: it cannot be dropped; A can, and then never runs or backfills again
        assert "promoted" in vista_fails(settings, "versions", "drop", version_b, "--yes", "--topic", topic)
        users = len({e.user_id for e in events})
        dropped = json.loads(vista(settings, "versions", "drop", version_a, "--yes", "--topic", topic).splitlines()[-1])
        assert dropped["rows_deleted"] == users
        assert store.read([e.user_id for e in events[:50]], version_a) == dict.fromkeys(
            [e.user_id for e in events[:50]])
        assert states(settings) == {version_a: ("retired", False), version_b: ("live", True)}
        assert registry.get(version_a).rows_deleted == users
        with pytest.raises(VersionError, match="dropped"):
            Worker(config_a.model_copy(update={"cold_start": True}), settings)
        assert "dropped" in vista_fails(settings, "backfill", f"kafka:{topic}", "--ckpt", ckpt_a, "--no-progress")
    finally:
        session.cluster.shutdown()
