"""Attention ops, one package per op as in flash-linear-attention; import an op from its package face (`kernels.qla`)."""
