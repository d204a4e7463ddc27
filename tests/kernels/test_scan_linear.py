"""The torch scan's chunked attention form (outer_phi=False) vs the one-event-at-a-time oracle.

Values and gradients, fp64 (so the tolerance says the algebra is exact: 1e-10), across block edges
(`LINEAR_BLOCK` positions per block), rows ending inside a block, empty rows, decay and cut points.
"""

from __future__ import annotations

import pytest
import torch

from kernels.qla import Backend, QLAState, qla
from kernels.qla.scan import LINEAR_BLOCK
from tests.helpers import rel_err

TOL = 1e-10

T_LONG = 2 * LINEAR_BLOCK + 5  # three blocks, the last one partial


@pytest.mark.parametrize("decay", [False, True], ids=["no_decay", "decay"])
@pytest.mark.parametrize(("t_max", "lengths", "cuts"), [
    (7, (7, 3, 0), ((6, 0), (2, 1), (0, 0))),
    (T_LONG, (T_LONG, LINEAR_BLOCK + 1, LINEAR_BLOCK, 0),
     ((T_LONG - 1, 0), (LINEAR_BLOCK, LINEAR_BLOCK - 1), (LINEAR_BLOCK - 1, 5), (0, 0))),
], ids=["short", "three_blocks"])
def test_linear_form_matches_recurrence(decay: bool, t_max: int, lengths: tuple[int, ...],
                                         cuts: tuple[tuple[int, ...], ...]) -> None:
    gen = torch.Generator().manual_seed(t_max)
    b, h, d = len(lengths), 2, 4
    q, k, v = (torch.randn(b, t_max, h, d, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3))
    m0 = torch.randn(b, h, d, d, generator=gen, dtype=torch.float64, requires_grad=True)
    c0 = torch.tensor([3.0] + [0.0] * (b - 1), dtype=torch.float64)
    with torch.no_grad():
        m0[1:] = 0.0  # rows after the first start empty, as new users do
    kw = dict(initial_count=c0, lengths=torch.tensor(lengths), outer_phi=False,
              gamma=torch.tensor([0.8, 0.999], dtype=torch.float64) if decay else None,
              state_positions=torch.tensor(cuts), output_final_state=True)
    o, got = qla(q, k, v, initial_state=m0, backend=Backend.TORCH, **kw)
    ref_o, ref = qla(q, k, v, initial_state=m0, backend=Backend.NAIVE, **kw)
    real = torch.arange(t_max)[None, :] < torch.tensor(lengths)[:, None]
    assert rel_err(o[real], ref_o[real]) <= TOL
    assert rel_err(got.state, ref.state) <= TOL
    assert torch.equal(got.count, ref.count)
    assert rel_err(got.states_at, ref.states_at) <= TOL
    assert torch.equal(got.counts_at, ref.counts_at)

    def grads(out: torch.Tensor, final: QLAState) -> list[torch.Tensor]:
        loss = (out[real] ** 2).sum() + final.state.sum() + final.states_at.pow(2).sum()
        return torch.autograd.grad(loss, (q, k, v, m0))

    for name, g_got, g_ref in zip("qkvM", grads(o, got), grads(ref_o, ref)):
        assert rel_err(g_got, g_ref) <= TOL, f"gradient of {name}"
