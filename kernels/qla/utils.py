"""What every QLA backend shares: the feature map, the normalizer, the validated inputs and the state.

Imports no backend, so the backends and the package face (`kernels.qla`, the dispatcher) all import it
without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class QLAState(NamedTuple):
    """The state after a pass: `state` and `count` are what the next call takes as initial_state / initial_count.

    state:      [B, H, d, d] M after each row's last real position (fp32; fp64 for fp64 inputs).
    count:      [B] event count N after each row's last real position (same dtype).
    states_at:  [B, C, H, d, d] M after the positions in `state_positions` (None without them).
    counts_at:  [B, C] N at those positions (None without them).
    """

    state: Tensor
    count: Tensor
    states_at: Tensor | None = None
    counts_at: Tensor | None = None


@dataclass
class QLAInputs:
    """One call's arguments, checked and converted once, so no backend can run on unchecked inputs.

    q, k, v keep their dtype (the output's); the state, count and gamma are moved to q's device in the
    compute dtype (`dtype`), lengths and state_positions to q's device (state_positions as long).
    """

    q: Tensor
    k: Tensor
    v: Tensor
    initial_state: Tensor
    initial_count: Tensor
    lengths: Tensor
    outer_phi: bool
    gamma: Tensor | None
    state_positions: Tensor | None

    def __post_init__(self) -> None:
        self._validate()
        dev, dt = self.q.device, self.dtype
        self.initial_state = self.initial_state.to(device=dev, dtype=dt)
        self.initial_count = self.initial_count.to(device=dev, dtype=dt)
        self.lengths = self.lengths.to(dev)
        if self.gamma is not None:
            self.gamma = self.gamma.to(device=dev, dtype=dt)
        if self.state_positions is not None:
            self.state_positions = self.state_positions.to(dev).long()

    @property
    def dtype(self) -> torch.dtype:
        """States and sums are fp32 at least; fp64 inputs (reference recomputes) stay fp64."""
        return torch.float64 if self.q.dtype == torch.float64 else torch.float32

    def _validate(self) -> None:
        """Shape checks (clear errors instead of broadcasting surprises)."""
        q, k, v, m0 = self.q, self.k, self.v, self.initial_state
        if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
            raise ValueError(f"q, k, v must all be [B, T, H, d]; "
                             f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
        b, _, h, d = q.shape
        if tuple(m0.shape) != (b, h, d, d):
            raise ValueError(f"initial_state must be [B, H, d, d] = {(b, h, d, d)}; got {tuple(m0.shape)}")
        if tuple(self.initial_count.shape) != (b,) or tuple(self.lengths.shape) != (b,):
            raise ValueError("initial_count and lengths must be [B]")
        if self.gamma is not None and tuple(self.gamma.shape) != (h,):
            raise ValueError(f"gamma must be [H] = [{h}]; got {tuple(self.gamma.shape)}")
        pos = self.state_positions
        if pos is not None and (pos.dim() != 2 or pos.shape[0] != b):
            raise ValueError(f"state_positions must be [B, C] with B = {b}; got {tuple(pos.shape)}")


def phi(x: Tensor) -> Tensor:
    """The QLA feature map (SiLU)."""
    return F.silu(x)


def normalizer(count: Tensor, gamma: Tensor | None, heads: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Per-head normalizer n [..., H] from the event count N [...] (see `kernels.qla`); 1 where N == 0."""
    count = count.to(dtype)
    if gamma is None:
        n = count[..., None].expand(*count.shape, heads)
    else:
        g = gamma.to(dtype).clamp(max=1.0 - 1e-7)
        n = (1.0 - torch.pow(g, count[..., None])) / (1.0 - g)
    return torch.where(count[..., None] > 0, n, torch.ones_like(n))


def normalized_memory(state: Tensor, count: Tensor, outer_phi: bool, gamma: Tensor | None = None) -> Tensor:
    """phi(M / n) (or M / n) for state [..., H, d, d] and count [...]; M / n := 0 where N == 0."""
    n = normalizer(count, gamma, state.shape[-3], state.dtype)
    mem = state / n[..., None, None]
    mem = torch.where((count > 0)[..., None, None, None], mem, torch.zeros_like(mem))
    return phi(mem) if outer_phi else mem


def gather_at(states: Tensor, counts: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
    """States [B, T, H, d, d] and counts [B, T] at positions [B, C] (long) -> [B, C, H, d, d], [B, C]."""
    h, d = states.shape[2], states.shape[3]
    return (torch.gather(states, 1, positions[..., None, None, None].expand(-1, -1, h, d, d)),
            torch.gather(counts, 1, positions))
