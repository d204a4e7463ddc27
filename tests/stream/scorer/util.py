"""Helpers of the scorer tests: a checkpoint with stored rows built through apply_events, a uvicorn thread."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from models.checkpoint import load_checkpoint, save_checkpoint
from models.vista import VistaModel
from models.vocab import ItemVocab
from schemas.events import InteractionEvent
from schemas.rows import SummaryRow
from stream.apply import SourcedEvent, apply_events
from tests.helpers import small_model
from tests.infra_helpers import free_port

NUM_ITEMS = 40


@dataclass
class Fixture:
    """A saved checkpoint, the same model loaded in-process, and the rows written for its users."""

    ckpt: Path
    model: VistaModel
    vocab: ItemVocab
    version: str
    rows: dict[str, SummaryRow]


def make_fixture(directory: Path, n_users: int = 4, seed: int | None = None, **model_overrides) -> Fixture:
    """An untrained small model (own random weights, so its own model_version) and rows for n_users
    unique users, built through the real update path (apply_events) in two micro-batches."""
    model = small_model(seed=seed if seed is not None else uuid.uuid4().int % 2**31,
                        **{"recent": 6, **model_overrides})
    vocab = ItemVocab([str(i) for i in range(1, NUM_ITEMS + 1)], oov_buckets=4)
    version = save_checkpoint(directory, model, vocab)
    model, vocab, _ = load_checkpoint(directory)
    prefix = f"scorer-test-{uuid.uuid4().hex[:10]}"
    g = torch.Generator().manual_seed(7)
    events: list[SourcedEvent] = []
    for u in range(n_users):
        n = 3 + 7 * u
        items = torch.randint(1, NUM_ITEMS + 1, (n,), generator=g).tolist()
        for t, item in enumerate(items):
            ev = InteractionEvent(user_id=f"{prefix}-{u}", item_id=str(item), action=t % 5, timestamp=1000 + 60 * t)
            events.append(SourcedEvent(ev, "test:0", len(events)))
    half = len(events) // 2
    rows: dict[str, SummaryRow | None] = {}
    for part in (events[:half], events[half:]):
        result = apply_events(model, vocab, version, rows, part)
        rows.update({r.user_id: r for r in result.rows})
    return Fixture(directory, model, vocab, version, {k: v for k, v in rows.items() if v is not None})


class ServerThread:
    """uvicorn serving `app` on a free loopback port from a daemon thread."""

    def __init__(self, app, port: int | None = None):  # noqa: ANN001
        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on", access_log=False))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
