"""The scorer's record cache is bounded in bytes, not in users."""

from __future__ import annotations

import torch

from models.vista import UserSummary
from schemas.requests import Freshness
from stream.scorer.engine import RecordCache, UserRecord, record_bytes


def _record(dim: int) -> UserRecord:
    summary = UserSummary(seeds=None, recent_items=torch.zeros(1, 4, dtype=torch.long), recent_h=torch.zeros(1, 4, dim))
    return UserRecord(summary, Freshness(events_seen=0, last_event_ts=None, updated_at=None), cold=False)


def test_the_cache_evicts_the_least_recent_record_past_its_byte_budget() -> None:
    small = _record(64)
    assert record_bytes(small) == 300 + 4 * 8 + 4 * 64 * 4
    cache = RecordCache(ttl_s=60, max_bytes=2 * record_bytes(small) + 10)
    cache.put("a", small)
    cache.put("b", _record(64))
    assert cache.get("a") is small  # "a" is now the most recent
    cache.put("c", _record(64))
    assert cache.get("b") is None and cache.get("a") is small and len(cache) == 2
    cache.put("big", _record(4096))  # larger than the whole budget: not kept, nothing else lost
    assert cache.get("big") is None and len(cache) == 2
