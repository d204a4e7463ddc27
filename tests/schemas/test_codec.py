"""Blob codec: explicit header, exact round-trips, and clear errors (never garbage) on bad bytes."""

from __future__ import annotations

import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import FORMAT_VERSION, BlobError, decode_tensor, encode_tensor


@pytest.mark.parametrize("dtype,torch_dtype", [("float32", torch.float32), ("int64", torch.long), ("int32", torch.int32)])
def test_exact_round_trip(dtype: str, torch_dtype: torch.dtype) -> None:
    t = (torch.randn(2, 3, 4) * 100).to(torch_dtype)
    back = decode_tensor(encode_tensor(t, dtype))
    assert back.dtype == torch_dtype and back.shape == t.shape
    assert torch.equal(back, t)


def test_float16_round_trip_is_fp16_rounding() -> None:
    t = torch.randn(128, 64)
    back = decode_tensor(encode_tensor(t, "float16"))
    assert back.dtype == torch.float32
    assert torch.equal(back, t.half().float())


def test_int8q_per_row_scales() -> None:
    t = torch.randn(16, 64) * torch.logspace(-3, 2, 16)[:, None]  # rows of very different magnitude
    back = decode_tensor(encode_tensor(t, "int8q"))
    err = (back - t).abs().amax(dim=1)
    assert (err <= t.abs().amax(dim=1) / 127 / 2 * 1.001).all()  # half a quantization step per row


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(0, 5), min_size=0, max_size=4), dtype=st.sampled_from(["float32", "float16", "int64"]))
def test_round_trip_any_shape(shape: list[int], dtype: str) -> None:
    t = torch.randn(tuple(shape)) if dtype != "int64" else torch.randint(-(2**40), 2**40, tuple(shape))
    back = decode_tensor(encode_tensor(t, dtype))
    assert tuple(back.shape) == tuple(shape)
    want = t.half().float() if dtype == "float16" else t
    assert torch.equal(back, want)


def test_header_layout_is_explicit() -> None:
    blob = encode_tensor(torch.zeros(3, 5), "float32")
    magic, version, code, ndim = struct.unpack_from("<4sBBB", blob)
    assert (magic, version, code, ndim) == (b"VSTB", FORMAT_VERSION, 1, 2)
    assert struct.unpack_from("<2I", blob, 12) == (3, 5)
    assert len(blob) == 12 + 8 + 15 * 4


def _corrupt(blob: bytes, pos: int) -> bytes:
    return blob[:pos] + bytes([blob[pos] ^ 0xFF]) + blob[pos + 1 :]


@pytest.mark.parametrize(
    "mangle,message",
    [
        (lambda b: b[:5], "truncated"),
        (lambda b: b[:-4], "payload"),
        (lambda b: b + b"\0", "payload"),
        (lambda b: b"XXXX" + b[4:], "magic"),
        (lambda b: b[:4] + bytes([FORMAT_VERSION + 1]) + b[5:], "version"),
        (lambda b: b[:5] + bytes([99]) + b[6:], "dtype"),
        (lambda b: _corrupt(b, len(b) - 1), "checksum"),
        (lambda b: b[:12] + struct.pack("<2I", 5, 3) + b[20:], None),  # transposed shape: same size, caught below
    ],
    ids=["truncated-header", "short-payload", "long-payload", "magic", "version", "dtype", "bitflip", "shape"],
)
def test_bad_blobs_raise_clear_errors(mangle, message) -> None:
    blob = mangle(encode_tensor(torch.randn(3, 5), "float32"))
    with pytest.raises(BlobError, match=message):
        decode_tensor(blob, expect_shape=(3, 5))


def test_null_blob() -> None:
    with pytest.raises(BlobError, match="missing"):
        decode_tensor(None)  # type: ignore[arg-type]


def test_unknown_dtype_on_encode() -> None:
    with pytest.raises(ValueError, match="unknown blob dtype"):
        encode_tensor(torch.zeros(2), "bfloat17")


@pytest.mark.parametrize("dtype", ["float32", "float16", "int64", "int8q"])
def test_batched_encode_and_decode_equal_the_per_row_ones(dtype: str) -> None:
    from schemas.codec import decode_stack, encode_rows

    torch.manual_seed(0)
    batch = torch.randn(5, 3, 4) * 10 if dtype != "int64" else torch.randint(-50, 50, (5, 3, 4))
    blobs = encode_rows(batch, dtype)
    assert blobs == [encode_tensor(row, dtype) for row in batch]
    assert torch.equal(decode_stack(blobs), torch.stack([decode_tensor(b) for b in blobs]))


def test_a_batch_decode_names_the_corrupt_blob() -> None:
    from schemas.codec import decode_stack, encode_rows

    blobs = encode_rows(torch.ones(3, 2), "float32")
    blobs[1] = blobs[1][:-1] + bytes([blobs[1][-1] ^ 1])
    with pytest.raises(BlobError, match="blob 1 of 3: blob checksum mismatch"):
        decode_stack(blobs)
