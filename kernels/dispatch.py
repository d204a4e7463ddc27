"""Backend selection for the QLA ops: passed down explicitly, never guessed at import time."""

from __future__ import annotations

import enum


class Backend(str, enum.Enum):
    """Which implementation of an op runs.

    TORCH   — the cumulative-sum ("scan") form in plain torch; CPU and CUDA.
    NAIVE   — the per-event recurrent loop; slow, the oracle of every test.
    TRITON  — the fused recurrent Triton kernel (CUDA, or CPU under TRITON_INTERPRET=1).
    """

    TORCH = "torch"
    NAIVE = "naive"
    TRITON = "triton"
