"""Kernel tests run the Triton kernels natively on CUDA, else under Triton's CPU interpreter.

`@triton.jit` picks the interpreter when the kernel module is imported, so
TRITON_INTERPRET=1 must be set before `kernels.qla.fused_recurrent` is imported
(importing triton itself earlier is fine). This conftest is imported when pytest
collects this folder, before any of its tests call the kernel; if some earlier
test already imported the kernel module without the interpreter, it is reloaded.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from collections.abc import Iterator

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ["TRITON_INTERPRET"] = "1"
    _mod = sys.modules.get("kernels.qla.fused_recurrent")
    if _mod is not None and not _mod._INTERPRETED:
        importlib.reload(_mod)


@pytest.fixture
def device() -> torch.device:
    return torch.device("cuda" if HAS_CUDA else "cpu")


@pytest.fixture
def nan_empty(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fresh `torch.empty` floating tensors start as NaN, so an output the kernel forgot to write fails."""
    real_empty = torch.empty

    def empty(*args, **kwargs):
        out = real_empty(*args, **kwargs)
        if out.is_floating_point():
            out.fill_(math.nan)
        return out

    monkeypatch.setattr(torch, "empty", empty)
    yield
