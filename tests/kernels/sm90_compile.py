"""Run as `python -m tests.kernels.sm90_compile` WITHOUT TRITON_INTERPRET: proves on a CPU-only machine that

1. calling the kernel on CPU tensors without the interpreter raises the clear error, and
2. the kernel compiles (Triton -> PTX -> cubin, with the bundled ptxas) for an H100 (sm_90)
   in every specialization, which the interpreter alone cannot show (it skips type checks
   of loop-carried values, constexpr branches, pointer arithmetic).
Prints one line per compiled variant; exits non-zero on any failure.
"""

from __future__ import annotations

import os

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from kernels.qla import Backend, qla
from kernels.qla import fused_recurrent as fr

TYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64"}


def compile_variant(dtype: torch.dtype, d: int, outer_phi: bool, use_gamma: bool, save_states: bool) -> int:
    """Compile one specialization for sm_90; returns the cubin size in bytes."""
    fn = fr.fused_recurrent_qla_fwd_kernel.fn
    acc = "fp64" if dtype == torch.float64 else "fp32"
    sig = {name: "i32" for name in fn.arg_names}  # strides, T, H, C
    sig.update(q=f"*{TYPES[dtype]}", k=f"*{TYPES[dtype]}", v=f"*{TYPES[dtype]}", o=f"*{TYPES[dtype]}",
               h0=f"*{acc}", ht=f"*{acc}", count0=f"*{acc}", lengths="*i32",
               gamma=f"*{acc}", norm=f"*{acc}", pos="*i64", slot="*i64", hs=f"*{acc}")
    const = dict(D=d, OUTER_PHI=outer_phi, USE_GAMMA=use_gamma, SAVE_STATES=save_states)
    if not use_gamma:
        const.update(gamma=None, norm=None)
    if not save_states:
        const.update(pos=None, slot=None, hs=None)
    for name in const:
        sig[name] = "constexpr"
    src = ASTSource(fn, sig, constexprs={(fn.arg_names.index(name),): val for name, val in const.items()})
    num_warps = max(1, min(4, d * d // 1024))
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps))
    return len(kernel.asm["cubin"])


def main() -> None:
    assert not os.environ.get("TRITON_INTERPRET"), "run without TRITON_INTERPRET"
    d = 4
    q = torch.randn(1, 2, 1, d)
    try:
        qla(q, q, q, initial_state=torch.zeros(1, 1, d, d), initial_count=torch.zeros(1), lengths=torch.tensor([2]),
            backend=Backend.TRITON)
    except RuntimeError as err:
        assert "TRITON_INTERPRET=1" in str(err) and "Backend.TORCH" in str(err), str(err)
        print("cpu-refused ok")
    else:
        raise AssertionError("the kernel ran on CPU without the interpreter")
    for dtype, d, outer_phi, use_gamma, save in [
        (torch.float32, 16, True, False, False),
        (torch.float32, 16, False, True, True),
        (torch.float16, 64, True, True, False),
        (torch.bfloat16, 1, True, False, True),
        (torch.float64, 16, True, True, True),
    ]:
        size = compile_variant(dtype, d, outer_phi, use_gamma, save)
        print(f"compiled {TYPES[dtype]} d={d} outer_phi={outer_phi} gamma={use_gamma} cuts={save}: {size} B cubin")


if __name__ == "__main__":
    main()
