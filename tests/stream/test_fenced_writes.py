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


def test_a_row_written_before_fencing_is_still_replaced_by_its_continuation(cassandra_session) -> None:
    """Rows written with a wall-clock timestamp (the driver's default, before fencing) are continued in the next
    generation: the continuation always wins over them."""
    import time

    model, store, user = small_model(seed=2), SummaryStore(cassandra_session), f"legacy-{uuid.uuid4().hex}"
    old = apply_events(model, VOCAB, "v-fence", {}, _events(user, 5)).rows[0]
    ks = cassandra_session.keyspace
    cassandra_session.execute(  # a late wall-clock timestamp: its low bits far above events_seen
        f"INSERT INTO {ks}.user_summaries (user_id, model_version, state, n, last_ts, recent_items, recent_h, "
        f"applied_offsets, events_seen) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) USING TIMESTAMP %s",
        (user, "v-fence", old.state, old.n, old.last_ts, old.recent_items, old.recent_h, old.applied_offsets,
         old.events_seen, time.time_ns() // 1000 + 3_000_000_000))
    stored = store.read([user], "v-fence")[user]
    more = apply_events(model, VOCAB, "v-fence", {user: stored}, _events(user, 8)).rows[0]
    store.write([more])
    assert store.read([user], "v-fence")[user].events_seen == 8
