"""Target attention for scoring: every candidate attends over its user's K + R memory tokens, alone.

`target_attention` (Triton, in `kernels.target.fused`, imported on first use) and its oracle
`naive_target_attention` share one signature; this face imports no triton.
"""

from kernels.target.naive import naive_target_attention

__all__ = ["naive_target_attention"]
