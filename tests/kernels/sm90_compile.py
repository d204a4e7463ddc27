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


def compile_kernel(kernel: object, types: dict[str, str], const: dict, num_warps: int) -> int:
    """Compile one specialization of `kernel` for sm_90; returns the cubin size in bytes.

    types: Triton types of the pointer (and non-i32) arguments; every other argument is an i32 scalar.
    const: the constexpr arguments (a None pointer is a constexpr None, as `triton.heuristics` sees it)."""
    fn = kernel
    while not isinstance(fn, triton.runtime.JITFunction):  # unwrap triton.heuristics
        fn = fn.fn
    sig = {name: "i32" for name in fn.arg_names}
    sig.update(types)
    for name in const:
        sig[name] = "constexpr"
    src = ASTSource(fn, sig, constexprs={(fn.arg_names.index(name),): val for name, val in const.items()})
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps))
    return len(compiled.asm["cubin"])


def compile_variant(dtype: torch.dtype, d: int, outer_phi: bool, use_gamma: bool, save_states: bool) -> int:
    """The fused recurrent forward."""
    acc = "fp64" if dtype == torch.float64 else "fp32"
    io = f"*{TYPES[dtype]}"
    types = dict(q=io, k=io, v=io, o=io, h0=f"*{acc}", ht=f"*{acc}", count0=f"*{acc}", lengths="*i32",
                 gamma=f"*{acc}", norm=f"*{acc}", pos="*i64", slot="*i64", hs=f"*{acc}")
    const = dict(D=d, OUTER_PHI=outer_phi, USE_GAMMA=use_gamma, SAVE_STATES=save_states, IS_VARLEN=False,
                 cu_seqlens=None)
    if not use_gamma:
        const.update(gamma=None, norm=None)
    if not save_states:
        const.update(pos=None, slot=None, hs=None)
    return compile_kernel(fr.fused_recurrent_qla_fwd_kernel, types, const, fr._num_warps(d))


def compile_recurrent_bwd(dtype: torch.dtype, d: int, outer_phi: bool, use_gamma: bool, cuts: bool) -> int:
    """The fused recurrent backward (with a final-state gradient)."""
    acc = "fp64" if dtype == torch.float64 else "fp32"
    io = f"*{TYPES[dtype]}"
    types = {name: io for name in ("q", "k", "v", "do")}
    types.update({name: f"*{acc}" for name in ("h0", "dht", "count0", "gamma", "norm", "dhs", "ck", "buf", "dq",
                                                "dk", "dv", "dh0")})
    types.update(lengths="*i32", pos="*i64", slot="*i64")
    const = dict(D=d, BT=32, OUTER_PHI=outer_phi, USE_GAMMA=use_gamma, USE_DHT=True, USE_DHS=cuts)
    if not use_gamma:
        const.update(gamma=None, norm=None)
    if not cuts:
        const.update(pos=None, slot=None, dhs=None)
    return compile_kernel(fr.fused_recurrent_qla_bwd_kernel, types, const, fr._num_warps(d))


def compile_others() -> list[str]:
    """state_update (the forward's varlen form), the chunked linear kernels, target attention."""
    from kernels.qla import chunk
    from kernels.target import fused as ta

    done = []
    fp32 = {name: "*fp32" for name in ("h0", "ht", "count0", "gamma", "norm")}
    for io, gamma in (("*fp32", True), ("*bf16", False)):
        types = dict(q=io, k=io, v=io, o=io, cu_seqlens="*i32", **fp32)
        const = dict(D=16, OUTER_PHI=False, USE_GAMMA=gamma, SAVE_STATES=False, IS_VARLEN=True, lengths=None,
                     pos=None, slot=None, hs=None)
        if not gamma:
            const.update(gamma=None, norm=None)
        size = compile_kernel(fr.fused_recurrent_qla_fwd_kernel, types, const, 1)
        done.append(f"state_update {io[1:]} d=16 gamma={gamma}: {size} B")
    # (io, d, form): "padded" is qla's training path (decay, right-padded lengths, chunk-start states for cut
    # points); "varlen" chunk_linear_qla's ragged one without decay; "dense" with decay, no lengths
    for io, d, form in (("*fp32", 16, "padded"), ("*bf16", 64, "varlen"), ("*fp16", 32, "dense")):
        ieee, varlen, padded = io == "*fp32", form == "varlen", form == "padded"
        flags = dict(D=d, BT=chunk.CHUNK, IEEE=ieee, USE_GAMMA=not varlen, USE_H0=True, USE_LENGTHS=padded,
                     IS_VARLEN=varlen)
        absent = {name: None for name, on in (("cu_seqlens", varlen), ("lengths", padded), ("gamma", not varlen))
                  if not on}
        types = dict(q=io, k=io, v=io, o="*fp32", gamma="*fp32", h0="*fp32", ht="*fp32", hs="*fp32",
                     lengths="*i32", cu_seqlens="*i32")
        const = dict(flags, STORE_HT=True, STORE_HS=padded, **absent)
        if not padded:
            const.update(hs=None)
        done.append(f"chunk fwd {io[1:]} d={d} {form}: "
                    f"{compile_kernel(chunk.chunk_linear_fwd_kernel, types, const, 4)} B")
        types = dict(q=io, k=io, v=io, do="*fp32", gamma="*fp32", h0="*fp32", dht="*fp32", dhs="*fp32",
                     dq="*fp32", dk="*fp32", dv="*fp32", dh0="*fp32", lengths="*i32", cu_seqlens="*i32")
        const = dict(flags, USE_DHT=True, USE_DHS=padded, **absent)
        if not padded:
            const.update(dhs=None)
        done.append(f"chunk bwd {io[1:]} d={d} {form}: "
                    f"{compile_kernel(chunk.chunk_linear_bwd_kernel, types, const, 4)} B")
    for io, dh in (("*fp32", 16), ("*fp16", 64)):
        types = dict(q=io, k=io, v=io, o=io, mask="*i8", scale="fp32")
        const = dict(DH=dh, BC=ta.BLOCK_C, BS=64)
        size = compile_kernel(ta.target_attention_fwd_kernel, types, const, 4)
        done.append(f"target_attention {io[1:]} dh={dh}: {size} B")
    return done


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
    for dtype, d, outer_phi, use_gamma, cuts in [
        (torch.float32, 16, True, True, True),
        (torch.bfloat16, 64, False, False, False),
    ]:
        size = compile_recurrent_bwd(dtype, d, outer_phi, use_gamma, cuts)
        print(f"compiled recurrent bwd {TYPES[dtype]} d={d} outer_phi={outer_phi} gamma={use_gamma} cuts={cuts}: "
              f"{size} B cubin")
    for line in compile_others():
        print(f"compiled {line} cubin")


if __name__ == "__main__":
    main()
