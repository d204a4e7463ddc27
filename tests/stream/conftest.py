"""Fixtures of the stream tests: ML-100K events, a fresh checkpoint per test, in-process workers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def running_worker(config, settings) -> Iterator:  # noqa: ANN001
    """A Worker consuming on a background thread; stopped (current batch finished) on exit."""
    from stream.worker import Worker

    worker = Worker(config, settings)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            worker.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="worker", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=60)
        assert not thread.is_alive(), "worker did not stop within 60 s"
    if errors:
        raise errors[0]
