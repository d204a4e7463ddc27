"""Most-popular baseline: one list for everyone, by training frequency (the floor every table shows)."""

from __future__ import annotations

from models.training.data import EncodedSequence
from models.training.evaluate import ScoreFn, popularity_score_fn


class MostPopular:
    """Fits in one pass over the training sequences; no parameters to learn, nothing to stop early."""

    def __init__(self, num_items: int):
        self.num_items = num_items
        self._score: ScoreFn | None = None

    def fit(self, train: list[EncodedSequence]) -> "MostPopular":
        self._score = popularity_score_fn(train, self.num_items)
        return self

    def score_fn(self) -> ScoreFn:
        if self._score is None:
            raise RuntimeError("MostPopular.fit must run before scoring")
        return self._score
