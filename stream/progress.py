"""Progress for long jobs (backfill, produce): a tqdm bar on a terminal, periodic plain lines otherwise.

Piped to a file or a CI log, a tqdm bar is either silent or a stream of carriage returns and ANSI
escapes; there, one line every `interval_s` seconds (and a last one at the end) says how far the job is.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any


class Progress:
    """`update(n, **postfix)` as the work advances, `close()` at the end."""

    def __init__(self, desc: str, *, total: int | None = None, unit: str = "ev", initial: int = 0,
                 interval_s: float = 10.0, stream: IO[str] | None = None, enabled: bool = True,
                 unit_scale: bool = True):
        self.desc, self.total, self.unit = desc, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.interval_s = interval_s
        self.enabled = enabled
        self.done = initial
        self._start = self._last = time.monotonic()
        self._postfix: dict[str, Any] = {}
        self._bar = None
        if enabled and _is_terminal(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, unit=unit, unit_scale=unit_scale, desc=desc,
                             dynamic_ncols=True, file=self.stream)

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.done += n
        self._postfix.update(postfix)
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(**postfix, refresh=False)
        elif self.enabled and time.monotonic() - self._last >= self.interval_s:
            self._line()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            self._line(final=True)

    def _line(self, final: bool = False) -> None:
        now = time.monotonic()
        self._last = now
        elapsed = now - self._start
        of = f"/{self.total}" if self.total is not None else ""
        rate = self.done / elapsed if elapsed > 0 else 0.0
        extra = "".join(f", {k} {v}" for k, v in self._postfix.items())
        state = "done" if final else "running"
        print(f"{self.desc}: {self.done}{of} {self.unit} in {elapsed:.0f} s ({rate:,.0f} {self.unit}/s{extra}) "
              f"[{state}]", file=self.stream, flush=True)


def _is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
