"""`resolve_backend`: auto is torch on the CPU, an explicit triton runs only where the kernels can, logged once."""

from __future__ import annotations

import logging

import pytest
import torch

from kernels import dispatch
from kernels.dispatch import resolve_backend
from kernels.qla import Backend, fused_recurrent

CPU = torch.device("cpu")


def test_auto_is_torch_on_cpu_and_torch_is_torch() -> None:
    assert resolve_backend("auto", CPU, 16) is Backend.TORCH
    assert resolve_backend("torch", CPU, 12) is Backend.TORCH  # any head width on torch


def test_triton_runs_on_cpu_only_under_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    if torch.cuda.is_available():
        pytest.skip("checks the CPU refusal")
    assert fused_recurrent.interpreted()  # conftest.py set TRITON_INTERPRET=1
    assert resolve_backend("triton", CPU, 16) is Backend.TRITON
    monkeypatch.setattr(fused_recurrent, "_INTERPRETED", False)
    with pytest.raises(ValueError, match="needs a CUDA device.*--backend torch"):
        resolve_backend("triton", CPU, 16)


def test_triton_refuses_an_unsupported_head_width() -> None:
    with pytest.raises(ValueError, match="power of two"):
        resolve_backend("triton", CPU, 12)


def test_unknown_choice() -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        resolve_backend("cuda", CPU)


def test_the_choice_is_logged_once(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(dispatch, "_logged", set())
    with caplog.at_level(logging.INFO, logger="vista.kernels"):
        for _ in range(3):
            resolve_backend("auto", CPU)
    assert [r.getMessage() for r in caplog.records] == ["qla backend torch (auto: cpu) on cpu"]
