"""The public face of `kernels.qla`: the (o, final_state) contract, the shared checks, and a triton-free import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kernels.qla import Backend, qla

REPO = Path(__file__).resolve().parents[2]


def _args(b: int = 2, t: int = 3, h: int = 2, d: int = 4, **overrides) -> tuple[tuple[torch.Tensor, ...], dict]:
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(b, t, h, d, generator=gen) for _ in range(3))
    kw = dict(initial_state=torch.randn(b, h, d, d, generator=gen), initial_count=torch.tensor([2.0, 0.0]),
              lengths=torch.tensor([t, 1]), gamma=torch.tensor([0.9, 0.99]))
    kw.update(overrides)
    return (q, k, v), kw


@pytest.mark.parametrize("backend", [Backend.TORCH, Backend.NAIVE])
def test_final_state_only_when_asked(backend: Backend) -> None:
    (q, k, v), kw = _args()
    o, none = qla(q, k, v, backend=backend, **kw)
    o_with, final = qla(q, k, v, backend=backend, output_final_state=True, **kw)
    assert none is None and torch.equal(o, o_with)
    assert final.state.shape == kw["initial_state"].shape and final.states_at is None
    assert torch.equal(final.count, kw["initial_count"] + kw["lengths"])


def test_state_positions_need_output_final_state() -> None:
    (q, k, v), kw = _args(state_positions=torch.tensor([[0], [0]]))
    with pytest.raises(ValueError, match="output_final_state=True"):
        qla(q, k, v, **kw)
    _, final = qla(q, k, v, output_final_state=True, **kw)
    assert final.states_at.shape == (2, 1, 2, 4, 4) and final.counts_at.shape == (2, 1)


@pytest.mark.parametrize("backend", [Backend.TORCH, Backend.NAIVE])
@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(initial_state=torch.zeros(2, 2, 4, 3)), r"initial_state must be \[B, H, d, d\]"),
        (dict(lengths=torch.tensor([3])), r"initial_count and lengths must be \[B\]"),
        (dict(gamma=torch.tensor([0.9])), r"gamma must be \[H\]"),
        (dict(state_positions=torch.tensor([0, 0])), r"state_positions must be \[B, C\]"),
    ],
    ids=["state-shape", "lengths-shape", "gamma-shape", "cuts-not-2d"],
)
def test_every_backend_checks_shapes(backend: Backend, overrides: dict, message: str) -> None:
    (q, k, v), kw = _args(**overrides)
    with pytest.raises(ValueError, match=message):
        qla(q, k, v, backend=backend, output_final_state=True, **kw)


def test_unknown_backend_is_refused() -> None:
    (q, k, v), kw = _args()
    with pytest.raises(ValueError, match="unknown backend"):
        qla(q, k, v, backend="cuda", **kw)


def test_face_imports_without_triton() -> None:
    """CPU-only code paths (Backend.TORCH / NAIVE) never import triton; the kernel module loads on first use."""
    code = "import sys, kernels.qla; assert 'triton' not in sys.modules, 'triton imported'"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
