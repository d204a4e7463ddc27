"""Tensor blobs: raw little-endian bytes behind an explicit header. Never pickle.

Layout (all little-endian):
    magic   4s   b"VSTB"
    version u8   FORMAT_VERSION
    dtype   u8   code from DTYPES (int8q = int8 rows with one fp32 scale per row)
    ndim    u8
    flags   u8   reserved, 0
    crc32   u32  of the payload
    shape   ndim × u32
    payload      raw values (int8q: fp32 scales of the leading rows, then int8 values)
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import torch

MAGIC = b"VSTB"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<4sBBBBI")
DTYPES: dict[str, int] = {"float32": 1, "float16": 2, "int64": 3, "int32": 4, "int8q": 5}
_NUMPY = {"float32": "<f4", "float16": "<f2", "int64": "<i8", "int32": "<i4"}
_CODES = {v: k for k, v in DTYPES.items()}
_ITEMSIZE = {k: np.dtype(v).itemsize for k, v in _NUMPY.items()}
MAX_NDIM = 8


class BlobError(ValueError):
    """A blob that is corrupt, truncated, of another format version or of an unexpected shape."""


def encode_tensor(tensor: torch.Tensor, dtype: str = "float32") -> bytes:
    """Serialize `tensor` as `dtype` (one of DTYPES). int8q quantizes each leading-dim row symmetrically."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown blob dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    arr = tensor.detach().cpu()
    if arr.dim() > MAX_NDIM:
        raise ValueError(f"tensor has {arr.dim()} dims; at most {MAX_NDIM} are supported")
    shape = tuple(arr.shape)
    if dtype == "int8q":
        if arr.dim() < 1:
            raise ValueError("int8q needs at least one dimension (rows)")
        rows = arr.float().reshape(shape[0], -1) if shape[0] else arr.float().reshape(0, 1)
        scales = rows.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        q = torch.round(rows / scales[:, None]).clamp(-127, 127).to(torch.int8)
        payload = scales.numpy().astype("<f4").tobytes() + q.numpy().tobytes()
    else:
        np_dtype = _NUMPY[dtype]
        payload = arr.numpy().astype(np_dtype).tobytes() if arr.dtype != torch.bfloat16 else \
            arr.float().numpy().astype(np_dtype).tobytes()
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, DTYPES[dtype], len(shape), 0, zlib.crc32(payload))
    return header + struct.pack(f"<{len(shape)}I", *shape) + payload


def encode_rows(tensor: torch.Tensor, dtype: str = "float32") -> list[bytes]:
    """`[encode_tensor(row, dtype) for row in tensor]` with one dtype conversion for the whole batch (the
    worker and the backfill encode hundreds of rows per call; per-row numpy round trips cost ~25 µs each)."""
    if dtype == "int8q" or dtype not in DTYPES or tensor.dim() < 1:
        return [encode_tensor(row, dtype) for row in tensor]
    arr = tensor.detach().cpu()
    arr = (arr.float() if arr.dtype == torch.bfloat16 else arr).numpy().astype(_NUMPY[dtype])
    shape = arr.shape[1:]
    dims = struct.pack(f"<{len(shape)}I", *shape)
    code = DTYPES[dtype]
    out = []
    for row in arr:
        payload = row.tobytes()
        out.append(_HEADER.pack(MAGIC, FORMAT_VERSION, code, len(shape), 0, zlib.crc32(payload)) + dims + payload)
    return out


def _checked(blob: bytes, expect_shape: tuple[int, ...] | None) -> tuple[str, tuple[int, ...], bytes]:
    """(dtype, shape, payload) of a blob whose header, size and checksum are valid; else BlobError."""
    if blob is None:
        raise BlobError("blob is missing (NULL)")
    if not isinstance(blob, bytes):
        blob = bytes(blob)
    if len(blob) < _HEADER.size:
        raise BlobError(f"blob truncated: {len(blob)} bytes, header needs {_HEADER.size}")
    magic, version, code, ndim, _flags, crc = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise BlobError(f"not a vista tensor blob (magic {magic!r}, expected {MAGIC!r})")
    if version != FORMAT_VERSION:
        raise BlobError(f"blob format version {version} is not supported (this code reads {FORMAT_VERSION})")
    if code not in _CODES:
        raise BlobError(f"unknown dtype code {code} in blob")
    if ndim > MAX_NDIM:
        raise BlobError(f"blob claims {ndim} dims (max {MAX_NDIM})")
    shape_end = _HEADER.size + 4 * ndim
    if len(blob) < shape_end:
        raise BlobError("blob truncated inside its shape")
    shape = struct.unpack_from(f"<{ndim}I", blob, _HEADER.size)
    payload = blob[shape_end:]
    dtype = _CODES[code]
    numel = math.prod(shape)
    expected = 4 * shape[0] + numel if dtype == "int8q" else _ITEMSIZE[dtype] * numel
    if len(payload) != expected:
        raise BlobError(f"blob payload is {len(payload)} bytes; shape {shape} as {dtype} needs {expected}")
    if zlib.crc32(payload) != crc:
        raise BlobError("blob checksum mismatch: the bytes are corrupt")
    if expect_shape is not None and tuple(shape) != tuple(expect_shape):
        raise BlobError(f"blob has shape {tuple(shape)}, expected {tuple(expect_shape)}")
    return dtype, shape, payload


def _as_tensor(dtype: str, shape: tuple[int, ...], payload: bytes) -> torch.Tensor:
    """Values of a checked payload [*shape]; float16 and int8q come back as float32."""
    if dtype == "int8q":
        rows = shape[0]
        numel = math.prod(shape)
        scales = np.frombuffer(payload[: 4 * rows], dtype="<f4")
        values = np.frombuffer(payload[4 * rows :], dtype=np.int8).astype(np.float32)
        values = values.reshape(rows, numel // rows if rows else 0)
        return torch.from_numpy((values * scales[:, None]).reshape(shape).copy())
    arr = np.frombuffer(payload, dtype=_NUMPY[dtype]).reshape(shape)
    out = torch.from_numpy(arr.astype(arr.dtype.newbyteorder("=")).copy())
    return out.float() if dtype == "float16" else out


def decode_tensor(blob: bytes, *, expect_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """Parse a blob; float16/int8q come back as float32. Raises BlobError on anything malformed."""
    return _as_tensor(*_checked(blob, expect_shape))


def decode_stack(blobs: list[bytes]) -> torch.Tensor:
    """`torch.stack([decode_tensor(b) for b in blobs])`, with one conversion for the whole batch when the
    blobs share a dtype and shape (every blob is still checked); BlobError names the first bad one."""
    if not blobs:
        raise ValueError("no blobs to decode")
    parsed = []
    for i, blob in enumerate(blobs):
        try:
            parsed.append(_checked(blob, None))
        except BlobError as exc:
            raise BlobError(f"blob {i} of {len(blobs)}: {exc}") from None
    dtype, shape, _ = parsed[0]
    if dtype == "int8q" or any(p[0] != dtype or p[1] != shape for p in parsed):
        if any(p[1] != shape for p in parsed):
            raise BlobError(f"blobs of one batch differ in shape: {shape} and others")
        return torch.stack([_as_tensor(*p) for p in parsed])
    return _as_tensor(dtype, (len(parsed), *shape), b"".join(p[2] for p in parsed))
