"""Matmul over GGML block-quantised weights kept as the GGUF file's bytes (Q4_0, Q4_1, Q8_0).

A weight of M rows and K inputs is a uint8 tensor [M, K / 32 * block bytes]: each row holds its
blocks' bytes grouped (every block's scale, then Q4_1's offsets, then the values; `from_gguf`
regroups a GGUF tensor's rows) so the kernel converts a row's scales in a few vector
instructions. On CPU the compiled extension (`cpu_ops`, `csrc/quant_matmul.cpp`) multiplies
without expanding the weight: each block is dequantised in registers and multiplied with a few
rows of activations at once, the weights streamed from memory once per call (what decode needs).
Elsewhere, or before the extension is loaded, the weight is dequantised in torch and multiplied
densely. Both equal `F.linear(x, dequantize(weight))` up to float rounding (and, for one or two
rows on the vector paths, x's rounding to 16-bit integers per block; see the C++ file). For many
rows (prefill) dequantising the weight once and running a dense GEMM is faster than the block
kernel, so `linear` switches at `DENSE_ROWS`; a caller with memory to spare passes a copy
dequantised once instead (`dense`): dequantising for every call writes the whole weight again,
and the GEMM right after it reads slower. That GEMM may run in bfloat16 (`dense_dtype`): on CPUs
with bf16 dot-product instructions it takes about half the time of fp32, for rounding the
activations and weights to 8 significant bits (the perplexity bound is checked in
tests/test_compact_weights.py); `fastest_dense_dtype` measures which this CPU runs faster.
"""

from __future__ import annotations

import enum
import functools
import threading
import time

import torch
import torch.nn.functional as F

from . import cpu_ops

__all__ = [
    "DENSE_ROWS",
    "BlockType",
    "dequantize",
    "dequantize_reference",
    "fastest_dense_dtype",
    "from_gguf",
    "linear",
]

BLOCK = 32  # values per block, all types here

# From this many activation rows on, dequantise and run torch's GEMM instead of the block kernel.
DENSE_ROWS = 48


class BlockType(enum.IntEnum):
    """GGML block types with a kernel here; the values are GGML's type ids."""

    Q4_0 = 2
    Q4_1 = 3
    Q8_0 = 8

    @property
    def block_bytes(self) -> int:
        return _BLOCK_BYTES[self]

    def row_bytes(self, in_features: int) -> int:
        return in_features // BLOCK * self.block_bytes


_BLOCK_BYTES = {BlockType.Q4_0: 18, BlockType.Q4_1: 20, BlockType.Q8_0: 34}


def instruction_set() -> str | None:
    """The vector path the extension runs ("avx512", "avx2", "scalar"); None if not loaded."""
    module = cpu_ops.module()
    return None if module is None else module.isa()


def _check(weight: torch.Tensor, kind: BlockType, in_features: int) -> None:
    if in_features <= 0 or in_features % BLOCK:
        raise ValueError(f"in_features must be a positive multiple of {BLOCK}, got {in_features}")
    if weight.dtype != torch.uint8 or weight.dim() != 2:
        raise ValueError(f"weight must be a 2-D uint8 tensor, got {weight.dtype} {weight.dim()}-D")
    if weight.shape[1] != kind.row_bytes(in_features):
        raise ValueError(
            f"weight rows hold {weight.shape[1]} bytes; {in_features} {kind.name} values "
            f"take {kind.row_bytes(in_features)}"
        )


def _parts(kind: BlockType) -> tuple[int, int]:
    """(bytes of scales, bytes of offsets) per block; the values take the rest."""
    return 2, 2 if kind is BlockType.Q4_1 else 0


def from_gguf(blocks: torch.Tensor, kind: BlockType, in_features: int) -> torch.Tensor:
    """GGUF rows [M, row bytes] (each block's scale, offset and values together) -> the same
    bytes grouped per row as the kernels read them: scales, offsets, values."""
    _check(blocks, kind, in_features)
    b = blocks.reshape(blocks.shape[0], -1, kind.block_bytes)
    scale, offset = _parts(kind)
    fields = [b[..., :scale], b[..., scale : scale + offset], b[..., scale + offset :]]
    return torch.cat([f.reshape(blocks.shape[0], -1) for f in fields if f.shape[-1]], dim=1)


def dequantize_reference(weight: torch.Tensor, kind: BlockType, in_features: int) -> torch.Tensor:
    """[M, row bytes] uint8 (`from_gguf`'s layout) -> [M, in_features] fp32 in plain torch ops
    (any device)."""
    _check(weight, kind, in_features)
    rows, nb = weight.shape[0], in_features // BLOCK
    scale, offset = _parts(kind)
    d = weight[:, : nb * scale].contiguous().view(torch.float16).float().unsqueeze(-1)
    start = nb * (scale + offset)
    packed = weight[:, start:].reshape(rows, nb, -1)
    if kind is BlockType.Q8_0:
        values = d * packed.contiguous().view(torch.int8).float()
    else:
        q = torch.cat([packed & 0x0F, packed >> 4], dim=-1).float()  # element j, then j + 16
        if kind is BlockType.Q4_1:
            m = weight[:, nb * scale : start].contiguous().view(torch.float16).float()
            values = d * q + m.unsqueeze(-1)
        else:
            values = d * (q - 8)
    return values.reshape(rows, in_features)


def dequantize(
    weight: torch.Tensor, kind: BlockType, in_features: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """[M, row bytes] uint8 -> [M, in_features] of dtype (fp32 or bf16; a new tensor), compiled
    on CPU once loaded."""
    module = cpu_ops.module()
    if module is not None and weight.device.type == "cpu":
        out = torch.empty(weight.shape[0], in_features, dtype=dtype)
        return module.dequantize(weight.contiguous(), int(kind), in_features, out)
    return dequantize_reference(weight, kind, in_features).to(dtype)


class _Scratch(threading.local):
    """Per thread, a buffer per dtype the dense path dequantises each weight into: a fresh
    tensor of several MB per matmul would page-fault its way in every time."""

    def __init__(self) -> None:
        self.buffers: dict[torch.dtype, torch.Tensor] = {}

    def take(self, values: int, dtype: torch.dtype) -> torch.Tensor:
        buffer = self.buffers.get(dtype)
        if buffer is None or buffer.numel() < values:
            buffer = self.buffers[dtype] = torch.empty(values, dtype=dtype)
        return buffer


_SCRATCH = _Scratch()


@functools.cache
def fastest_dense_dtype() -> torch.dtype:
    """bfloat16 where this CPU runs a prefill-sized GEMM in it at most 3/4 of the fp32 time
    (bf16 dot-product instructions or AMX), else float32. Measured once per process, a few
    tens of milliseconds; without bf16 instructions torch emulates bf16, several times slower
    than fp32."""
    x, w = torch.randn(256, 1024), torch.randn(1024, 1024)

    def best(dtype: torch.dtype) -> float:
        xd, wd = x.to(dtype), w.to(dtype)
        times = []
        for _ in range(4):  # the first call sets the kernel up
            start = time.perf_counter()
            F.linear(xd, wd)
            times.append(time.perf_counter() - start)
        return min(times[1:])

    return torch.bfloat16 if best(torch.bfloat16) <= 0.75 * best(torch.float32) else torch.float32


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    kind: BlockType,
    in_features: int,
    bias: torch.Tensor | None = None,
    dense_dtype: torch.dtype = torch.float32,
    dense: torch.Tensor | None = None,
) -> torch.Tensor:
    """`F.linear(x, dequantize(weight))` for x [..., in_features]; fp32 out for fp32 in. From
    `DENSE_ROWS` rows on, the dense GEMM runs in `dense_dtype` (float32 or bfloat16), over
    `dense` where the caller keeps the weight dequantised (its dtype then rules), else over
    the weight dequantised for this call."""
    module = cpu_ops.EXTENSION.module
    # The decode case first, in as few Python operations as possible: it runs hundreds of
    # times per step, and each call's own work is tens of microseconds.
    if module is not None and x.dtype is torch.float32 and x.device.type == "cpu":
        rows = x.numel() // in_features
        if rows < DENSE_ROWS:
            flat = x if x.dim() == 2 else x.reshape(rows, in_features)
            out = module.matmul(flat, weight, kind, in_features)
            if x.dim() != 2:
                out = out.view(*x.shape[:-1], weight.shape[0])
            return out if bias is None else out + bias
        if dense is None:
            scratch = _SCRATCH.take(weight.shape[0] * in_features, dense_dtype)
            dense = module.dequantize(weight, kind, in_features, scratch)
        if dense.dtype is torch.float32:
            return F.linear(x, dense, bias)
        out = F.linear(x.to(dense.dtype), dense).float()
        return out if bias is None else out + bias
    return F.linear(x, dequantize(weight, kind, in_features).to(x.dtype), bias)
