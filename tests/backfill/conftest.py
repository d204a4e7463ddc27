"""Fixtures of the backfill tests: ML-100K in file order and in replay order, a fresh checkpoint per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.events import InteractionEvent
from tests.stream.util import ML100K, make_checkpoint


def file_events(path: Path) -> list[InteractionEvent]:
    """A log's valid events in file order: the order a file backfill applies them (the one-shot reference)."""
    from stream.sources import FileSource

    src = FileSource(path)
    return [e.event for chunk in src.chunks({}, 100_000) for e in chunk.events]


@pytest.fixture(scope="session")
def ml100k_file_events() -> list[InteractionEvent]:
    return file_events(ML100K)


@pytest.fixture(scope="session")
def ml100k_replay_events() -> list[InteractionEvent]:
    """ML-100K in timestamp order (ties in file order), as the producer replays it into Kafka."""
    from stream.producer import load_events

    return load_events(ML100K)


@pytest.fixture()
def checkpoint(tmp_path: Path, ml100k_file_events: list[InteractionEvent]) -> Path:
    """A small untrained model over the ML-100K items, with a model_version of its own (rows never collide)."""
    ckpt = tmp_path / "ckpt"
    make_checkpoint(ckpt, sorted({e.item_id for e in ml100k_file_events}, key=int))
    return ckpt
