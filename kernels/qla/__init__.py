"""Causal quasi-linear attention (QLA) with a per-user recurrent state; the package's public face.

    o, final_state = qla(q, k, v, initial_state=M0, initial_count=N0, lengths=lengths,
                         output_final_state=True, backend=Backend.TORCH)

Layout: q, k, v are [B, T, H, d] (right-padded; `lengths` [B] says how many
positions of each row are real). State M is [B, H, d, d] fp32 and the count N
is [B] fp32. For each real position t of a row:

    M_t = gamma * M_{t-1} + phi(k_t)^T v_t          N_t = N_{t-1} + 1   (events seen)
    o_t = phi(q_t) · phi(M_t / n_t)                  (outer_phi=True)
    o_t = phi(q_t) · (M_t / n_t)                     (outer_phi=False)

with phi = SiLU, the per-head normalizer n_t = sum_{s<=t} gamma^(t-s), which is
N_t without decay and (1 - gamma^N_t) / (1 - gamma) with it — a function of the
event count alone, so the state stores one count — and M/n := 0 where N = 0.
Padded positions leave the state unchanged and their outputs are unspecified.

Modules: `utils` (what the backends share), one per backend (`scan`, `naive`,
`fused_recurrent`, `chunk`), each importing only `utils` (`chunk` also the recurrent module's checks); this
face imports the torch ones, the Triton ones on first use. Streaming: `state_update` (packed users, a few
events each). Scoring: `kernels.target.target_attention`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from torch import Tensor

from kernels.qla.naive import naive_recurrent_qla
from kernels.qla.scan import scan_qla
from kernels.qla.utils import QLAInputs, QLAState, normalized_memory, phi

__all__ = ["Backend", "QLAState", "normalized_memory", "phi", "qla"]


class Backend(str, enum.Enum):
    """Which implementation of `qla` runs: passed down explicitly, never guessed at import time.

    TORCH   — the cumulative-sum ("scan") form in plain torch; CPU and CUDA.
    NAIVE   — the per-event recurrent loop; slow, the oracle of every test.
    TRITON  — the Triton kernels (CUDA, or CPU under TRITON_INTERPRET=1): the chunked form (`chunk`) for the
              linear form (decay and cut points included) at head widths 16..64, else the fused recurrent
              scan (`fused_recurrent`: outer phi, narrower heads, fp64).
    """

    TORCH = "torch"
    NAIVE = "naive"
    TRITON = "triton"


def qla(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    initial_state: Tensor,
    initial_count: Tensor,
    lengths: Tensor,
    outer_phi: bool = True,
    gamma: Tensor | None = None,
    state_positions: Tensor | None = None,
    output_final_state: bool = False,
    backend: Backend = Backend.TORCH,
) -> tuple[Tensor, QLAState | None]:
    """Run causal QLA over right-padded rows from a given state; returns (o [B, T, H, d], final_state).

    gamma: optional per-head decay [H] in (0, 1]; None means no decay (the paper).
    state_positions: optional [B, C] long indices of positions whose post-update
        state is returned in final_state.states_at (training cut points); each must
        be < the row's length. Needs output_final_state=True, since that is where they come back.
    output_final_state: return the `QLAState` after each row's last real position; else None.
    """
    if state_positions is not None and not output_final_state:
        raise ValueError("the states at state_positions come back in the final state: pass output_final_state=True")
    inputs = QLAInputs(q, k, v, initial_state, initial_count, lengths, outer_phi, gamma, state_positions)
    o, final_state = _backend_op(backend)(inputs)
    return o, final_state if output_final_state else None


def _backend_op(backend: Backend) -> Callable[[QLAInputs], tuple[Tensor, QLAState]]:
    """The op of `backend`; no fallback to another one."""
    if backend == Backend.TORCH:
        return scan_qla
    if backend == Backend.NAIVE:
        return naive_recurrent_qla
    if backend == Backend.TRITON:
        # imported on first use: they import triton, and TRITON_INTERPRET is read when they are imported
        from kernels.qla import chunk, fused_recurrent

        def triton_op(inputs: QLAInputs) -> tuple[Tensor, QLAState]:
            # by the call's shape (the linear form at a head width the dots take is chunked), not after a failure
            if chunk.chunk_applies(inputs):
                return chunk.chunk_qla(inputs)
            return fused_recurrent.fused_recurrent_qla(inputs)

        return triton_op
    raise ValueError(f"unknown backend {backend!r}")
