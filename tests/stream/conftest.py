"""Fixtures of the stream tests: ML-100K events and a fresh checkpoint (own model_version) per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.events import InteractionEvent
from tests.stream.util import ML100K, make_checkpoint


@pytest.fixture(scope="session")
def ml100k_events() -> list[InteractionEvent]:
    """All of ML-100K in replay order (timestamp, ties in file order)."""
    from stream.producer import load_events

    return load_events(ML100K)


@pytest.fixture()
def checkpoint(tmp_path: Path, ml100k_events: list[InteractionEvent]) -> Path:
    """A small untrained model over the ML-100K items, with a model_version of its own."""
    ckpt = tmp_path / "ckpt"
    make_checkpoint(ckpt, sorted({e.item_id for e in ml100k_events}, key=int))
    return ckpt
