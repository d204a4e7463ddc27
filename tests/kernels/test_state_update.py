"""`state_update` (the stream's packed update) vs per-user runs of the naive recurrence.

Relative-RMS tolerances: fp32 1e-5 on o and states; fp16/bf16 inputs: states 1e-5 (fp32 accumulation of
the same rounded inputs), o 1e-3 (fp16) and 1e-2 (bf16), the output's own rounding.
"""

from __future__ import annotations

import zlib

import pytest
import torch

from kernels.qla.naive import naive_state_update
from kernels.qla.state_update import state_update
from tests.kernels.test_fused_recurrent_qla import assert_close

CASES = {
    "few-events-many-users": dict(lengths=(3, 1, 0, 5, 2, 0, 1), d=16),
    "phi-decay": dict(lengths=(4, 0, 7), d=8, outer_phi=True, decay=True),
    "nophi-decay-fresh": dict(lengths=(2, 6, 1), d=16, decay=True, fresh=True),
    "all-empty": dict(lengths=(0, 0), d=4),
    "one-user-T63": dict(lengths=(63,), d=32),
    "d1": dict(lengths=(2, 3), d=1),
}
DTYPE_TOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}


def _packed(name: str, lengths: tuple[int, ...], d: int, heads: int = 2, dtype: torch.dtype = torch.float32,
            decay: bool = False, fresh: bool = False, device: torch.device | str = "cpu", **_: object) -> tuple:
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    total, n = sum(lengths), len(lengths)
    q, k, v = (torch.randn(1, total, heads, d, generator=gen).to(dtype).to(device) for _ in range(3))
    state = torch.zeros(n, heads, d, d) if fresh else torch.randn(n, heads, d, d, generator=gen)
    count = torch.zeros(n) if fresh else torch.randint(1, 40, (n,), generator=gen).float()
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    gamma = torch.linspace(0.9, 0.999, heads).to(device) if decay else None
    return (q, k, v), dict(initial_state=state.to(device), initial_count=count.to(device), cu_seqlens=cu.to(device),
                           gamma=gamma)


PARAMS = [pytest.param(name, torch.float32, id=name) for name in CASES] + [
    pytest.param(name, dt, id=f"{name}-{str(dt).removeprefix('torch.')}")
    for name in ("few-events-many-users", "phi-decay") for dt in (torch.float16, torch.bfloat16)]


@pytest.mark.parametrize("name, dtype", PARAMS)
def test_matches_per_user_naive(name: str, dtype: torch.dtype, device: torch.device, nan_empty: None) -> None:
    case = CASES[name]
    (q, k, v), kw = _packed(name, dtype=dtype, device=device, **case)
    outer_phi = case.get("outer_phi", False)
    with torch.no_grad():
        o, new = state_update(q, k, v, outer_phi=outer_phi, **kw)
        ref_o, ref = naive_state_update(q, k, v, outer_phi=outer_phi, **kw)
    assert o.dtype == dtype and new.state.dtype == torch.float32
    if o.numel():
        assert_close("o", o, ref_o, DTYPE_TOL[dtype])
    assert_close("state", new.state, ref.state)
    assert torch.equal(new.count, ref.count)


def test_split_and_resume_equals_one_call(device: torch.device) -> None:
    """Events delivered in two micro-batches (and in place, as a worker owning its batch does) give the state of
    one call over all of them."""
    lengths, cut = (5, 0, 3, 8), (2, 0, 3, 1)  # the first batch takes `cut` events of each user
    (q, k, v), kw = _packed("split", lengths, 16, decay=True, device=device)
    with torch.no_grad():
        o_all, whole = state_update(q, k, v, **kw)
    first = [i for lo, n, c in zip(kw["cu_seqlens"][:-1].tolist(), lengths, cut) for i in range(lo, lo + c)]
    second = [i for lo, n, c in zip(kw["cu_seqlens"][:-1].tolist(), lengths, cut) for i in range(lo + c, lo + n)]
    state, count = kw["initial_state"].clone(), kw["initial_count"].clone()
    outs = []
    for idx, counts in ((first, cut), (second, tuple(n - c for n, c in zip(lengths, cut)))):
        cu = torch.tensor([0, *torch.tensor(counts).cumsum(0).tolist()], dtype=torch.int32, device=device)
        sel = torch.tensor(idx, dtype=torch.long, device=device)
        with torch.no_grad():
            o, new = state_update(q[:, sel], k[:, sel], v[:, sel], initial_state=state, initial_count=count,
                                  cu_seqlens=cu, gamma=kw["gamma"], in_place=True)
        assert new.state.data_ptr() == state.data_ptr() and new.count.data_ptr() == count.data_ptr()
        outs.append((sel, o))
    assert_close("state", state, whole.state)
    assert torch.equal(count, whole.count)
    o_split = torch.empty_like(o_all)
    for sel, o in outs:
        o_split[:, sel] = o
    assert_close("o", o_split, o_all)


@pytest.mark.parametrize("bad, message", [
    (dict(cu_seqlens=[0, 2, 1, 6]), "cu_seqlens must rise"),
    (dict(cu_seqlens=[0, 2, 3, 5]), "cu_seqlens must rise"),
    (dict(initial_count=[1.0, 2.0]), r"initial_count must be \[N\]"),
], ids=["decreasing", "short-of-total", "count-shape"])
def test_rejects_bad_packing(bad: dict, message: str, device: torch.device) -> None:
    (q, k, v), kw = _packed("bad", (2, 1, 3), 4, device=device)
    kw.update({key: torch.tensor(val, device=device) for key, val in bad.items()})
    with pytest.raises(ValueError, match=message), torch.no_grad():
        state_update(q, k, v, **kw)


def test_refuses_gradients(device: torch.device) -> None:
    (q, k, v), kw = _packed("grad", (2, 1), 4, device=device)
    q.requires_grad_(True)
    with pytest.raises(RuntimeError, match="forward only"):
        state_update(q, k, v, **kw)
