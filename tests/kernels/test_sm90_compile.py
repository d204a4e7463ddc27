"""The compiled (non-interpreted) path, checked on any machine: CPU refusal and an sm_90 cubin build of every
kernel (fused recurrent fwd/bwd, state_update, chunked linear fwd/bwd, target attention)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_kernel_compiles_for_h100_and_refuses_cpu_without_interpreter() -> None:
    env = {key: val for key, val in os.environ.items() if key != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-W", "ignore", "-m", "tests.kernels.sm90_compile"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cpu-refused ok" in proc.stdout
    assert proc.stdout.count("compiled ") == 17, proc.stdout  # recurrent 5 fwd + 2 bwd, state_update 2, chunk 6, target 2
