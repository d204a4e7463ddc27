"""Item vocabulary: raw item ids (strings) -> embedding rows, with hashed buckets for unseen ids."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import torch


class ItemVocab:
    """Row 0 is padding, rows 1..V the known items in first-seen order, then `oov_buckets` hashed rows.

    Hashing uses blake2b (stable across processes, unlike Python's `hash`), so a
    given unseen id lands in the same bucket in the worker, backfill and scorer.
    """

    def __init__(self, items: Sequence[str], oov_buckets: int):
        if oov_buckets < 1:
            raise ValueError("oov_buckets must be >= 1")
        self.items: list[str] = [str(i) for i in items]
        if len(set(self.items)) != len(self.items):
            raise ValueError("item vocabulary has duplicate ids")
        self.oov_buckets = oov_buckets
        self._index = {item: i + 1 for i, item in enumerate(self.items)}

    @classmethod
    def build(cls, item_ids: Iterable[object], oov_buckets: int) -> "ItemVocab":
        seen: dict[str, None] = {}
        for item in item_ids:
            seen.setdefault(str(item), None)
        return cls(list(seen), oov_buckets)

    def __len__(self) -> int:
        return len(self.items)

    def is_known(self, item_id: object) -> bool:
        return str(item_id) in self._index

    def oov_index(self, item_id: object) -> int:
        digest = hashlib.blake2b(str(item_id).encode(), digest_size=8).digest()
        return 1 + len(self.items) + int.from_bytes(digest, "little") % self.oov_buckets

    def index(self, item_id: object) -> int:
        key = str(item_id)
        found = self._index.get(key)
        return found if found is not None else self.oov_index(key)

    def lookup(self, item_ids: list[str]) -> tuple[list[int], int]:
        """Rows of many ids (OOV ones hashed into their buckets) and how many were out of vocabulary."""
        get = self._index.get
        rows = [get(i) for i in item_ids]
        missing = [k for k, r in enumerate(rows) if r is None]
        for k in missing:
            rows[k] = self.oov_index(item_ids[k])
        return rows, len(missing)

    def encode(self, item_ids: Iterable[object]) -> torch.Tensor:
        return torch.tensor([self.index(i) for i in item_ids], dtype=torch.long)

    def decode(self, index: int) -> str:
        if 1 <= index <= len(self.items):
            return self.items[index - 1]
        raise KeyError(f"row {index} is padding or an OOV bucket, not a known item")

    def known_indices(self) -> torch.Tensor:
        """Rows of all known items: the candidate set of full ranking."""
        return torch.arange(1, len(self.items) + 1, dtype=torch.long)
