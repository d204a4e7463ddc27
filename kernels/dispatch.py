"""One resolution of a `backend` setting (auto | torch | triton) for every command: explicit, logged once.

Torch-free at import, so the torch-free config modules (worker, backfill, scorer, training) can name the
choice type; torch and triton are imported only when a choice is resolved, never at import time.

    backend = resolve_backend(config.backend, model.device, model.cfg.head_dim)
    model.backend = backend

`auto` is Triton on CUDA and torch on the CPU. An explicit `triton` where the kernels cannot run (a CPU
without TRITON_INTERPRET=1, a head width the kernels do not take) is an error at startup, never a quiet
torch run; and once chosen, a backend is never swapped for another after a failure.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

    from kernels.qla import Backend

BackendChoice = Literal["auto", "torch", "triton"]
BACKEND_HELP = ("QLA kernels: 'auto' (Triton on CUDA, torch on the CPU), 'torch', or 'triton' (CUDA; on a CPU only "
                "with TRITON_INTERPRET=1, for tests)")

log = logging.getLogger("vista.kernels")
_logged: set[tuple[str, str, str]] = set()


def resolve_backend(choice: str, device: torch.device, head_dim: int | None = None) -> Backend:
    """The `Backend` that `choice` means on `device` (for a model of head width `head_dim`, checked when given).

    Raises ValueError for an unknown choice, or for `triton` where the kernels cannot run."""
    from kernels.qla import Backend

    if choice not in ("auto", "torch", "triton"):
        raise ValueError(f"unknown backend {choice!r}: use auto, torch or triton")
    if choice == "torch" or (choice == "auto" and device.type != "cuda"):
        backend, why = Backend.TORCH, ("asked" if choice == "torch" else f"auto: {device.type}")
    else:
        _check_triton_runs(device, head_dim, choice)
        backend, why = Backend.TRITON, ("asked" if choice == "triton" else "auto: cuda")
    key = (choice, str(device), backend.value)
    if key not in _logged:
        _logged.add(key)
        log.info("qla backend %s (%s) on %s", backend.value, why, device,
                 extra={"event": "qla_backend", "backend": backend.value, "choice": choice, "device": str(device)})
    return backend


def _check_triton_runs(device: torch.device, head_dim: int | None, choice: str) -> None:
    """Refuse, with the way out, what the Triton kernels cannot do here."""
    # imported on resolution, not at import: triton reads TRITON_INTERPRET when a kernel module is imported
    from kernels.qla import fused_recurrent

    if device.type != "cuda" and not fused_recurrent.interpreted():
        raise ValueError(f"backend {choice!r} needs a CUDA device; this run is on {device}. Use --backend torch "
                         "(or auto), or set TRITON_INTERPRET=1 before start for the (slow) Triton interpreter")
    if head_dim is not None and not fused_recurrent.supported_head_dim(head_dim):
        raise ValueError(f"backend {choice!r}: the Triton kernels need a head width that is a power of two "
                         f"<= {fused_recurrent.MAX_HEAD_DIM}; this model's is {head_dim}. Use --backend torch")
