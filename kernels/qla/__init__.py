"""Causal quasi-linear attention (QLA) with a per-user recurrent state.

Public entry: `qla(q, k, v, ..., backend=Backend.TORCH)`; every backend has the
same signature as the naive reference in `naive.py`.
"""

from kernels.qla.common import QLAResult, qla

__all__ = ["QLAResult", "qla"]
