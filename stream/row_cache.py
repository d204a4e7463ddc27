"""An in-process LRU of summary rows, shared by the live worker and the backfill.

Both continue a user's state from the newest row they wrote; keeping it in memory saves a Cassandra read
per touched user. Rows inserted by one `put` are never evicted by that same call, so everything evicted
was written (and acknowledged) by an earlier batch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from schemas.rows import SummaryRow


ROW_OVERHEAD_BYTES = 512  # the pydantic object, its offsets map and the dict entry, roughly


def row_bytes(row: SummaryRow) -> int:
    """What one cached row costs in memory: its blobs plus a fixed overhead."""
    return (len(row.state) + len(row.recent_items) + len(row.recent_h) + len(row.seeds or b"")
            + ROW_OVERHEAD_BYTES)


class RowCache:
    """Rows up to `max_bytes` in all (or the last batch's rows, if more), least recently used evicted first.

    Sized in bytes, not rows: a row is 8 KiB for the general model and 31 KiB for the old default, so a
    row count hid a 15 GiB default. The last batch is always kept: the backfill overlaps a batch's Cassandra
    write with the next batch's compute, so the next batch must find those rows here, not in a store that
    may not have them yet.
    """

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self.bytes = 0
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
            old = self._rows.get(r.user_id)
            if old is not None:
                self.bytes -= row_bytes(old)
            self._rows[r.user_id] = r
            self._rows.move_to_end(r.user_id)
            self.bytes += row_bytes(r)
        while self.bytes > self.max_bytes and self._rows:
            oldest = next(iter(self._rows))
            if oldest in keep:
                break
            self.bytes -= row_bytes(self._rows.pop(oldest))

    def clear(self) -> None:
        self._rows.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._rows)
