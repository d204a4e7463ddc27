"""The worker's and the backfill's row cache is bounded in bytes and never evicts the batch just put."""

from __future__ import annotations

from schemas.rows import SummaryRow
from stream.row_cache import RowCache, row_bytes


def _row(user: str, state_bytes: int = 1000) -> SummaryRow:
    return SummaryRow(user_id=user, model_version="v", state=b"s" * state_bytes, n=1.0, last_ts=1,
                      recent_items=b"i" * 24, recent_h=b"h" * 148, events_seen=1)


def test_bytes_bound_the_cache_and_least_recent_rows_go_first() -> None:
    size = row_bytes(_row("a"))
    cache = RowCache(3 * size)
    for user in "abc":
        cache.put(_row(user))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put(_row("d"))
    assert cache.get("b") is None and all(cache.get(u) is not None for u in "acd")
    assert cache.bytes == 3 * size


def test_the_last_batch_is_kept_even_past_the_bound() -> None:
    cache = RowCache(0)
    batch = [_row(u) for u in "xyz"]
    cache.put(batch)
    assert len(cache) == 3 and all(cache.get(u) is not None for u in "xyz")
    cache.put(_row("w"))
    assert len(cache) == 1 and cache.get("w") is not None


def test_replacing_a_row_counts_its_bytes_once() -> None:
    cache = RowCache(10**6)
    cache.put(_row("a", 100))
    cache.put(_row("a", 5000))
    assert cache.bytes == row_bytes(_row("a", 5000))
