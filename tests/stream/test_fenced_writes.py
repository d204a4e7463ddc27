"""Fenced writes: a row's write timestamp grows with its state (generation * 2^32 + events_seen), so the late
write of an older state (a worker that stalled past a rebalance: a zombie) never replaces a newer row, while a
rebuilt row (a later generation) replaces whatever was there."""

from __future__ import annotations

import uuid

import pytest

from models.vocab import ItemVocab
from schemas.events import InteractionEvent
from stream.apply import SourcedEvent, apply_events
from stream.store import SummaryStore
from tests.helpers import small_model

pytestmark = pytest.mark.integration
VOCAB = ItemVocab([str(i) for i in range(1, 41)], oov_buckets=4)


def _events(user: str, n: int) -> list[SourcedEvent]:
    return [SourcedEvent(InteractionEvent(user_id=user, item_id=str(1 + i % 40), timestamp=100 + i), "events:0", i)
            for i in range(n)]


def test_a_zombies_late_write_never_replaces_a_newer_row(cassandra_session) -> None:
    model, store, user = small_model(seed=1), SummaryStore(cassandra_session), f"fence-{uuid.uuid4().hex}"
    base = apply_events(model, VOCAB, "v-fence", {}, _events(user, 5)).rows[0]
    store.write([base])
    base = store.read([user], "v-fence")[user]  # both writers continue from the stored row
    owner = apply_events(model, VOCAB, "v-fence", {user: base}, _events(user, 20)).rows[0]
    zombie = apply_events(model, VOCAB, "v-fence", {user: base}, _events(user, 12)).rows[0]
    assert owner.generation == zombie.generation == base.generation
    store.write([owner])
    store.write([zombie])  # the stalled worker wakes up and writes its older state last
    stored = store.read([user], "v-fence")[user]
    assert (stored.events_seen, stored.applied_offsets) == (20, {"events:0": 19})
    assert stored.state == owner.state

    rebuilt = apply_events(model, VOCAB, "v-fence", {}, _events(user, 3)).rows[0]
    rebuilt.generation = stored.generation + 1  # what a rebuild does (stream/backfill.py)
    store.write([rebuilt])
    assert store.read([user], "v-fence")[user].events_seen == 3
