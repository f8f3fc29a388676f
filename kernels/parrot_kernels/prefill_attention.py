"""Causal attention of a prompt chunk over its request's history, compiled on CPU.

A chunk's n queries are the last n positions of the L keys (a cached prefix, then the chunk
itself), each seeing the keys up to its own. torch's fused CPU attention runs far below the
FMA rate for heads of 64 values; the compiled kernel (`cpu_ops`, `csrc/prefill_attention.cpp`)
scores tiles of eight query vectors against eight keys from registers. Each row's result
depends only on its own query and keys, not on how the prompt was split into chunks. fp32 CPU
tensors on AVX2 CPUs and head sizes a multiple of 8; `prefill_attention` returns None for
anything else (or before the extension is loaded), and the caller runs its torch path.
"""

from __future__ import annotations

import math

import torch

from . import cpu_ops

__all__ = ["prefill_attention"]


def prefill_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None
) -> torch.Tensor | None:
    """q [n, Hq, D] (RoPE applied), the last n positions of k, v [L, Hkv, D], Hkv dividing Hq
    (query head i reads key head i // (Hq / Hkv)). Returns [n, Hq, D], or None where the
    compiled path does not apply."""
    module = cpu_ops.EXTENSION.module
    if module is None:
        return None
    for t in (q, k, v):
        if t.dtype is not torch.float32 or t.device.type != "cpu":
            return None
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    return module.prefill_attention(q.contiguous(), k.contiguous(), v.contiguous(), scale)
