"""An in-process LRU of summary rows, shared by the live worker and the backfill.

Both continue a user's state from the newest row they wrote; keeping it in memory saves a Cassandra read
per touched user. Rows inserted by one `put` are never evicted by that same call, so everything evicted
was written (and acknowledged) by an earlier batch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from schemas.rows import SummaryRow


class RowCache:
    """At most `max_users` rows (or the last batch's rows, if more), least recently used evicted first.

    The last batch is always kept: the backfill overlaps a batch's Cassandra write with the next batch's
    compute, so the next batch must find those rows here, not in a store that may not have them yet.
    """

    def __init__(self, max_users: int):
        if max_users < 0:
            raise ValueError("max_users must be >= 0")
        self.max_users = max_users
        self._rows: OrderedDict[str, SummaryRow] = OrderedDict()

    def get(self, user: str) -> SummaryRow | None:
        row = self._rows.get(user)
        if row is not None:
            self._rows.move_to_end(user)
        return row

    def put(self, rows: SummaryRow | Iterable[SummaryRow]) -> None:
        """Insert one row or a batch's rows (newest wins), then evict the oldest rows of earlier batches."""
        batch = [rows] if isinstance(rows, SummaryRow) else list(rows)
        keep = {r.user_id for r in batch}
        for r in batch:
            self._rows[r.user_id] = r
            self._rows.move_to_end(r.user_id)
        while len(self._rows) > self.max_users:
            oldest = next(iter(self._rows))
            if oldest in keep:
                break
            del self._rows[oldest]

    def clear(self) -> None:
        self._rows.clear()

    def __len__(self) -> int:
        return len(self._rows)
