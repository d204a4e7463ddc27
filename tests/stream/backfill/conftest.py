"""Fixtures of the backfill tests: ML-100K in file order (replay order and the checkpoint: tests/stream/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.events import InteractionEvent
from tests.stream.util import ML100K


def file_events(path: Path) -> list[InteractionEvent]:
    """A log's valid events in file order: the order a file backfill applies them (the one-shot reference)."""
    from stream.sources import FileSource

    src = FileSource(path)
    return [e.event for chunk in src.chunks({}, 100_000) for e in chunk.events]


@pytest.fixture(scope="session")
def ml100k_file_events() -> list[InteractionEvent]:
    return file_events(ML100K)
