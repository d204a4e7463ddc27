"""In-memory stand-ins for the backfill's Cassandra stores: the summarization alone, without servers.

Used by tests and by the `summarize` mode of benchmarks/backfill_throughput.py; no resume across processes.
"""

from __future__ import annotations

from schemas.rows import SummaryRow
from stream.store import ShardProgress


class MemoryProgress:
    """Progress kept in a dict (stream.store.ProgressStore's interface)."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, ShardProgress]] = {}

    def read(self, job_id: str) -> dict[str, ShardProgress]:
        return {k: ShardProgress(**vars(v)) for k, v in self.jobs.get(job_id, {}).items()}

    def write(self, job_id: str, shards: list[ShardProgress]) -> None:
        self.jobs.setdefault(job_id, {}).update({p.shard: ShardProgress(**vars(p)) for p in shards})


class MemoryStore:
    """Rows kept in a dict (stream.store.SummaryStore's interface, as the backfill uses it)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], SummaryRow] = {}

    def read(self, user_ids: list[str], model_version: str, with_state: bool = True
             ) -> dict[str, SummaryRow | None]:
        return {u: self.rows.get((u, model_version)) for u in user_ids}

    def write(self, rows: list[SummaryRow]) -> None:
        for r in rows:
            self.rows[(r.user_id, r.model_version)] = r
