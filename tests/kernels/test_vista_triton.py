"""VistaModel.update with Backend.TRITON gives the states of Backend.TORCH (the stream worker's path)."""

from __future__ import annotations

import pytest
import torch

from kernels.qla import Backend
from models.state import EventBatch, UserStates
from tests.helpers import batch_of, random_sequences, rel_err, small_model


def _update(model, backend: Backend, states: UserStates, events: EventBatch, chunk_size: int) -> UserStates:
    model.backend = backend
    return model.update(states, events, chunk_size=chunk_size)


def _assert_same_states(got: UserStates, ref: UserStates) -> None:
    assert torch.equal(got.count, ref.count) and torch.equal(got.last_ts, ref.last_ts)
    assert torch.equal(got.recent_items, ref.recent_items)
    err = rel_err(got.memory, ref.memory)
    assert err <= 1e-5, f"memory: relative error {err:.3e}"
    # recent h^L is stored rounded to fp16: a 1e-7 difference may flip one rounding now and then
    err = rel_err(got.recent_h, ref.recent_h)
    assert err <= 1e-3, f"recent_h: relative error {err:.3e}"


@pytest.mark.parametrize(
    "overrides",
    [dict(outer_phi=True, decay=False), dict(outer_phi=True, decay=True), dict()],
    ids=["paper-fused", "phi-decay-fused", "default-linear-decay-chunked"],
)
def test_update_triton_equals_torch(overrides: dict, device: torch.device) -> None:
    """Mixed lengths (a user with no new events included), small time chunks, two update calls in a row."""
    model = small_model(seed=1, dim=32, heads=2, **overrides).to(device)  # d = 16
    gen = torch.Generator().manual_seed(7)
    seqs = random_sequences(4, 11, model.cfg.num_items, gen)
    seqs[2] = ([], [], [])
    first, second = batch_of(seqs), batch_of(random_sequences(4, 5, model.cfg.num_items, gen, min_len=1))

    states_t = _update(model, Backend.TRITON, model.init_state(4), first, chunk_size=4)
    states_r = _update(model, Backend.TORCH, model.init_state(4), first, chunk_size=4)
    _assert_same_states(states_t, states_r)
    _assert_same_states(_update(model, Backend.TRITON, states_t, second, chunk_size=4),
                        _update(model, Backend.TORCH, states_r, second, chunk_size=4))


@pytest.mark.parametrize("outer_phi", [False, True], ids=["default-linear-decay-chunked", "phi-decay-fused"])
def test_scan_with_grad_on_triton(outer_phi: bool, device: torch.device) -> None:
    """Training's form (cut points included): the Triton backward gives the torch scan's values and parameter
    gradients."""
    model = small_model(seed=2, dim=32, heads=2, dropout=0.0, outer_phi=outer_phi).to(device).train()  # d = 16
    events = batch_of(random_sequences(2, 4, model.cfg.num_items, torch.Generator().manual_seed(1), min_len=1))
    cuts = torch.stack([torch.zeros_like(events.lengths), events.lengths - 1], dim=1)
    outs, grads = {}, {}
    for backend in (Backend.TRITON, Backend.TORCH):
        model.backend = backend
        model.zero_grad()
        out = model.scan(events, state_positions=cuts)
        (out.hidden[out.mask].pow(2).sum() + out.memory.sum() + out.memory_at.pow(2).sum()).backward()
        outs[backend] = out
        grads[backend] = {n: p.grad.clone() for n, p in model.stack.named_parameters() if p.grad is not None}
    out_t, out_r = outs[Backend.TRITON], outs[Backend.TORCH]
    assert rel_err(out_t.memory, out_r.memory) <= 1e-5
    assert rel_err(out_t.memory_at, out_r.memory_at) <= 1e-5
    assert rel_err(out_t.hidden[out_r.mask], out_r.hidden[out_r.mask]) <= 1e-5
    assert grads[Backend.TRITON].keys() == grads[Backend.TORCH].keys() and grads[Backend.TORCH]
    for name, ref in grads[Backend.TORCH].items():
        assert rel_err(grads[Backend.TRITON][name], ref) <= 1e-5, name


def test_resolved_backend_reaches_the_kernel(device: torch.device, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands' path: resolve_backend -> model.backend -> the Triton op runs, once per layer and chunk
    (the paper's outer-phi form: the fused recurrent kernel)."""
    from kernels.dispatch import resolve_backend
    from kernels.qla import fused_recurrent

    calls = []
    real = fused_recurrent.fused_recurrent_qla
    monkeypatch.setattr(fused_recurrent, "fused_recurrent_qla", lambda inputs: calls.append(1) or real(inputs))
    model = small_model(seed=3, dim=32, heads=2, outer_phi=True).to(device)
    model.backend = resolve_backend("triton", model.device, model.cfg.head_dim)
    events = batch_of(random_sequences(2, 3, model.cfg.num_items, torch.Generator().manual_seed(2), min_len=1))
    model.update(model.init_state(2), events, chunk_size=8)
    assert len(calls) == model.cfg.layers


@pytest.mark.parametrize("decay", [False, True], ids=["no-decay", "decay-default"])
def test_linear_form_takes_the_chunked_kernel(decay: bool, device: torch.device,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Backend.TRITON on the linear form (the default config: with decay) runs the chunked kernels and gives the
    torch states."""
    from kernels.qla import chunk

    calls = []
    real = chunk._chunk_linear
    monkeypatch.setattr(chunk, "_chunk_linear", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    model = small_model(seed=4, dim=32, heads=2, outer_phi=False, decay=decay).to(device)  # d = 16
    gen = torch.Generator().manual_seed(5)
    seqs = random_sequences(3, 9, model.cfg.num_items, gen)
    seqs[1] = ([], [], [])
    events = batch_of(seqs)
    got = _update(model, Backend.TRITON, model.init_state(3), events, chunk_size=4)
    assert len(calls) == model.cfg.layers * 3  # three time chunks of 4
    _assert_same_states(got, _update(model, Backend.TORCH, model.init_state(3), events, chunk_size=4))
