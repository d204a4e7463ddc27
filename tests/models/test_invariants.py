"""The model invariants of ../shared/design/vista-streaming.md (fp32, tolerances as stated there)."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.qla import Backend
from models.state import EventBatch, UserStates
from tests.helpers import batch_of, random_sequences, rel_err, small_model

TOL_EXACT = 1e-5  # invariants 1 and 2
TOL_CANDIDATE = 1e-6  # invariant 3
TOL_LONG = 1e-3  # invariant 5


def _assert_states_close(a: UserStates, b: UserStates, tol: float = TOL_EXACT) -> None:
    assert torch.equal(a.count, b.count)
    assert torch.equal(a.last_ts, b.last_ts)
    assert torch.equal(a.recent_items, b.recent_items)
    assert rel_err(a.memory, b.memory) <= tol
    assert rel_err(a.recent_h, b.recent_h) <= 1e-3  # fp16-rounded buffer: one ulp flips stay ~5e-4


@pytest.mark.parametrize("outer_phi", [True, False], ids=["outer_phi", "linear"])
@pytest.mark.parametrize("decay", [False, True], ids=["no_decay", "decay"])
def test_recurrent_step_equals_scan(outer_phi: bool, decay: bool) -> None:
    """Invariant 1: one event at a time through the naive recurrent kernel == the parallel training scan."""
    model = small_model(outer_phi=outer_phi, decay=decay, decay_min=0.9)
    gen = torch.Generator().manual_seed(1)
    seqs = random_sequences(4, 30, 40, gen, min_len=1)
    events = batch_of(seqs)
    scanned = model.scan(events)

    stepper = copy.deepcopy(model)
    stepper.backend = Backend.NAIVE
    states = stepper.init_state(len(seqs))
    hidden = []
    for t in range(max(len(s[0]) for s in seqs)):
        step = [([s[0][t]], [s[1][t]], [s[2][t]]) if t < len(s[0]) else ([], [], []) for s in seqs]
        states = stepper.update(states, batch_of(step))
        hidden.append(states.recent_h[:, -1].clone())
    assert rel_err(states.memory, scanned.memory.detach()) <= TOL_EXACT
    for b, s in enumerate(seqs):
        # recurrent outputs are stored fp16; compare the fp32 scan rounded the same way
        want = scanned.hidden[b, : len(s[0])].detach().half().float()
        got = torch.stack([hidden[t][b] for t in range(len(s[0]))])
        assert rel_err(got, want) <= 1e-3


def _split_updates(model, seqs, cuts_per_user, others) -> UserStates:
    """Apply each user's events in the given pieces, each call mixed with unrelated users' events."""
    states = model.init_state(len(seqs))
    rounds = max(len(c) for c in cuts_per_user) + 1
    for r in range(rounds):
        pieces = []
        for s, cuts in zip(seqs, cuts_per_user):
            bounds = [0, *cuts, len(s[0])]
            lo, hi = (bounds[r], bounds[r + 1]) if r + 1 < len(bounds) else (len(s[0]), len(s[0]))
            pieces.append((s[0][lo:hi], s[1][lo:hi], s[2][lo:hi]))
        # put strangers in the same ragged call: they must not influence our users
        stranger_states = model.init_state(len(others))
        mixed = UserStates.cat([states, stranger_states])
        mixed = model.update(mixed, batch_of(pieces + others), chunk_size=7)
        states = mixed.select(torch.arange(len(seqs)))
    return states


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_any_micro_batch_split_equals_full_recompute(data) -> None:
    """Invariant 2: random splits, mixed with other users in the same call == one full recompute."""
    model = small_model(seed=2)
    seed = data.draw(st.integers(0, 10_000))
    gen = torch.Generator().manual_seed(seed)
    seqs = random_sequences(3, 25, 40, gen)
    others = random_sequences(2, 10, 40, gen)
    cuts = [sorted(data.draw(st.lists(st.integers(0, len(s[0])), max_size=4))) for s in seqs]
    full = model.update(model.init_state(len(seqs)), batch_of(seqs))
    split = _split_updates(model, seqs, cuts, others)
    _assert_states_close(split, full)
    assert rel_err(model.summarize(split).seeds, model.summarize(full).seeds) <= TOL_EXACT


@pytest.mark.parametrize("memory_readout", [False, True], ids=["seeds", "seeds+memory_read"])
def test_candidate_independence(memory_readout: bool) -> None:
    """Invariant 3: adding, removing or permuting candidates never changes a candidate's logit."""
    model = small_model(seed=3, memory_readout=memory_readout)
    gen = torch.Generator().manual_seed(3)
    states = model.update(model.init_state(3), batch_of(random_sequences(3, 20, 40, gen, min_len=1)))
    summary = model.summarize(states)
    base = torch.tensor([5, 9, 17, 33])
    ref = model.score(summary, base)
    perm = torch.tensor([2, 0, 3, 1])
    assert rel_err(model.score(summary, base[perm]), ref[:, perm]) <= TOL_CANDIDATE
    assert rel_err(model.score(summary, torch.cat([base, torch.tensor([1, 2, 3, 44])]))[:, :4], ref) <= TOL_CANDIDATE
    assert rel_err(model.score(summary, base[:2]), ref[:, :2]) <= TOL_CANDIDATE
    assert rel_err(model.score(summary, base[None].expand(3, -1)), ref) <= TOL_CANDIDATE  # per-user form


def test_empty_history() -> None:
    """An empty history summarizes and scores; zero-event rows in a ragged call keep their state."""
    model = small_model(seed=4)
    empty = model.init_state(2)
    logits = model.score(model.summarize(empty), torch.arange(1, 41))
    assert torch.isfinite(logits).all()
    gen = torch.Generator().manual_seed(4)
    seqs = random_sequences(1, 10, 40, gen, min_len=3) + [([], [], [])]
    states = model.update(empty, batch_of(seqs))
    assert states.count.tolist() == [len(seqs[0][0]), 0]
    assert torch.equal(states.memory[1], empty.memory[1])
    assert int(states.last_ts[1]) == -1
    same = model.update(states, batch_of([([], [], []), ([], [], [])]))
    _assert_states_close(same, states, tol=0.0)


def test_events_of_other_users_do_not_leak() -> None:
    """A user's state does not depend on who else is in the batch (ragged padding is inert)."""
    model = small_model(seed=5)
    gen = torch.Generator().manual_seed(5)
    seqs = random_sequences(5, 40, 40, gen)
    together = model.update(model.init_state(5), batch_of(seqs))
    for i, s in enumerate(seqs):
        alone = model.update(model.init_state(1), batch_of([s]))
        _assert_states_close(together.select(torch.tensor([i])), alone)


def test_oov_items_are_accepted() -> None:
    """Rows past the known items (hashed OOV buckets) embed and update without error."""
    model = small_model(seed=6)
    oov_row = model.cfg.num_items + 2
    states = model.update(model.init_state(1), EventBatch.from_sequences([([oov_row, 3], [0, 1], [10, 20])]))
    assert int(states.count[0]) == 2
    assert torch.isfinite(model.score(model.summarize(states), torch.tensor([oov_row]))).all()


@pytest.mark.slow
def test_million_event_accumulation_matches_fp64() -> None:
    """Invariant 5: after 10^6 events the fp32 state and seeds stay within 1e-3 of an fp64 recompute."""
    model = small_model(seed=7, dim=64, heads=4, num_seeds=16)
    n = 1_000_000
    gen = torch.Generator().manual_seed(7)
    items = torch.randint(1, 41, (n,), generator=gen)
    events = EventBatch(items, torch.randint(0, 6, (n,), generator=gen),
                        torch.randint(0, 1000, (n,), generator=gen).cumsum(0), torch.tensor([n]))
    fp32 = model.update(model.init_state(1), events, chunk_size=8192)
    model64 = copy.deepcopy(model).double()
    fp64 = model64.update(model64.init_state(1), events, chunk_size=8192)
    assert fp64.memory.dtype == torch.float64
    assert int(fp32.count[0]) == n
    assert rel_err(fp32.memory, fp64.memory) <= TOL_LONG
    seeds32 = model.summarize(fp32).seeds
    seeds64 = model64.summarize(fp64).seeds
    assert rel_err(seeds32, seeds64) <= TOL_LONG


def test_own_seed_weights_keep_the_split_invariant() -> None:
    """The `seed_weights="own"` ablation: seeds still a pure function of the state (splits == full)."""
    model = small_model(seed=8, seed_weights="own")
    gen = torch.Generator().manual_seed(8)
    seqs = random_sequences(3, 20, 40, gen)
    full = model.update(model.init_state(3), batch_of(seqs))
    split = _split_updates(model, seqs, [[4], [0, 9], [20]], random_sequences(2, 6, 40, gen))
    _assert_states_close(split, full)
    assert rel_err(model.summarize(split).seeds, model.summarize(full).seeds) <= TOL_EXACT


def test_side_embeddings_off_ignore_actions_and_times() -> None:
    """With the action and gap embeddings off, an event is its item alone (and the split invariant holds)."""
    model = small_model(seed=9, action_embedding=False, gap_embedding=False)
    assert model.embedding.action is None and model.embedding.gap is None
    gen = torch.Generator().manual_seed(9)
    seqs = random_sequences(3, 20, 40, gen, min_len=2)
    relabeled = [(items, [a + 1 for a in acts], [10 * t + 7 for t in ts]) for items, acts, ts in seqs]
    full = model.update(model.init_state(3), batch_of(seqs))
    other = model.update(model.init_state(3), batch_of(relabeled))
    assert rel_err(other.memory, full.memory) <= TOL_EXACT
    split = _split_updates(model, seqs, [[4], [0, 9], [20]], random_sequences(2, 6, 40, gen))
    _assert_states_close(split, full)
