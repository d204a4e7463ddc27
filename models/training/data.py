"""Interaction logs -> per-user time-ordered sequences, and the leave-one-out split.

Files are read by schemas.interactions (MovieLens u.data, CSV, JSONL, Parquet): the same reader the backfill
and the producer use, so offline metrics come from exactly the events that served rows are built from. Bad
records are left out, logged with their count, and kept on `Dataset.bad`; no value is ever repaired.
Rows are sorted by (timestamp) per user with ties kept in file order (Amazon Beauty has day-resolution
timestamps).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models.state import EventBatch
from models.vocab import ItemVocab
from schemas.bad_records import BadRecord
from schemas.interaction_formats import FileFormat
from schemas.interactions import read_interactions


@dataclass
class Sequence:
    """One user's history: parallel lists in arrival order."""

    user: str
    items: list[str] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class Dataset:
    """All users' sequences plus the vocabulary built from every item seen, and the bad records left out."""

    name: str
    sequences: list[Sequence]
    vocab: ItemVocab
    bad: list[BadRecord] = field(default_factory=list)

    @property
    def num_events(self) -> int:
        return sum(len(s) for s in self.sequences)


def load_dataset(path: str | Path, oov_buckets: int = 64, fmt: FileFormat | None = None) -> Dataset:
    """Group by user, order each user's events by timestamp (stable), build the vocabulary."""
    rows = read_interactions(path, fmt)
    by_user: dict[str, list[tuple[int, int, str, int]]] = defaultdict(list)
    for pos, (user, item, action, ts) in enumerate(rows):
        by_user[user].append((ts, pos, item, action))
    sequences = []
    for user, events in by_user.items():
        events.sort()
        sequences.append(Sequence(user, [e[2] for e in events], [e[3] for e in events], [e[0] for e in events]))
    vocab = ItemVocab.build((item for s in sequences for item in s.items), oov_buckets)
    name = Path(path).stem if Path(path).stem != "u" else Path(path).parent.name
    return Dataset(name, sequences, vocab, bad=rows.bad)


@dataclass
class EncodedSequence:
    """A sequence mapped through the vocabulary (tensors, ready for EventBatch)."""

    user: str
    items: torch.Tensor
    actions: torch.Tensor
    timestamps: torch.Tensor
    learn: torch.Tensor | None = None  # [n] bool: which positions are training targets (None: every one)

    def __len__(self) -> int:
        return self.items.shape[0]

    def slice(self, stop: int, start: int = 0) -> "EncodedSequence":
        learn = self.learn[start:stop] if self.learn is not None else None
        return EncodedSequence(self.user, self.items[start:stop], self.actions[start:stop], self.timestamps[start:stop],
                               learn)

    def learnable(self) -> torch.Tensor:
        """[n] bool: the positions whose item a model is trained to predict."""
        return self.learn if self.learn is not None else torch.ones(len(self), dtype=torch.bool)


def returns(items: torch.Tensor, gap: int) -> torch.Tensor:
    """[n] bool: position t holds a return, an item consumed before but not among the `gap` events just before
    it (re-consumption after a dormant stretch: what a lifelong memory is for, and what a window of `gap`
    events cannot see)."""
    n = items.shape[0]
    order = torch.from_numpy(np.lexsort((np.arange(n), items.numpy())))  # by item, then time
    same = items[order[1:]] == items[order[:-1]]
    previous = torch.full((n,), -1, dtype=torch.long)
    previous[order[1:]] = torch.where(same, order[:-1], torch.full_like(order[:-1], -1))
    return (previous >= 0) & (torch.arange(n) - previous > gap)


def session_starts(timestamps: torch.Tensor, gap_s: int) -> torch.Tensor:
    """[n] bool: position t starts a session, more than `gap_s` seconds after the event before it (the first
    event of a history too)."""
    starts = torch.ones(timestamps.shape[0], dtype=torch.bool)
    starts[1:] = timestamps[1:] - timestamps[:-1] > gap_s
    return starts


def with_objective_targets(seqs: list[EncodedSequence], gap: int | None,
                        session_gap_s: int | None = None) -> list[EncodedSequence]:
    """The objectives that pick training targets: returns (`return_gap`) and/or session starts (`session_gap_s`)
    only; with neither, every target is learned."""
    if gap is None and session_gap_s is None:
        return seqs
    out = []
    for s in seqs:
        learn = torch.ones(len(s), dtype=torch.bool)
        if gap is not None:
            learn &= returns(s.items, gap)
        if session_gap_s is not None:
            learn &= session_starts(s.timestamps, session_gap_s)
        out.append(EncodedSequence(s.user, s.items, s.actions, s.timestamps, learn))
    return out


def encode(dataset: Dataset, vocab: ItemVocab | None = None) -> list[EncodedSequence]:
    """Map every sequence through `vocab` (default: the dataset's own; pass a checkpoint's to evaluate it)."""
    vocab = vocab or dataset.vocab
    return [EncodedSequence(s.user, vocab.encode(s.items), torch.tensor(s.actions, dtype=torch.long),
                            torch.tensor(s.timestamps, dtype=torch.long)) for s in dataset.sequences]


def to_batch(seqs: list[EncodedSequence]) -> EventBatch:
    """Pack encoded sequences into one ragged EventBatch."""
    if not seqs:
        z = torch.zeros(0, dtype=torch.long)
        return EventBatch(z, z, z, z)
    return EventBatch(torch.cat([s.items for s in seqs]), torch.cat([s.actions for s in seqs]),
                      torch.cat([s.timestamps for s in seqs]), torch.tensor([len(s) for s in seqs], dtype=torch.long))


@dataclass
class LeaveOneOut:
    """Per user: train on [:-2]; validate [:-2] -> [-2]; test [:-1] -> [-1]. Users with < 3 events only train."""

    train: list[EncodedSequence]
    valid: list[tuple[EncodedSequence, int]]
    test: list[tuple[EncodedSequence, int]]


def leave_one_out(seqs: list[EncodedSequence]) -> LeaveOneOut:
    train, valid, test = [], [], []
    for s in seqs:
        n = len(s)
        if n < 3:
            train.append(s)
            continue
        train.append(s.slice(n - 2))
        valid.append((s.slice(n - 2), int(s.items[n - 2])))
        test.append((s.slice(n - 1), int(s.items[n - 1])))
    return LeaveOneOut(train, valid, test)
