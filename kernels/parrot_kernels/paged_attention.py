"""Decode attention straight from a paged KV pool (one new token per request), compiled on CPU.

Each request's query attends to the pool rows its slots name, read in place. The torch way (a
view or gather of the history, then a fused attention call) is a dozen ops per layer, each with
cold caches in a decode step; the compiled path (`cpu_ops`, `csrc/paged_attention.cpp`) is one
call. It takes fp32 CPU tensors; `paged_decode_attention` returns None for anything else (or
before the extension is loaded), and the caller runs its torch path.
"""

from __future__ import annotations

import math

import torch

from . import cpu_ops

__all__ = ["paged_decode_attention"]


def paged_decode_attention(
    q: torch.Tensor,
    k_pool: torch.Tensor,
    v_pool: torch.Tensor,
    slots: torch.Tensor,
    lengths: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor | None:
    """q [B, Hq, D] (RoPE applied); k_pool, v_pool [slots, Hkv, D] with Hkv dividing Hq;
    slots [B, L] int64 (row b's first lengths[b] entries are its keys, the rest padding);
    lengths [B] int64. Returns [B, Hq, D], or None where the compiled path does not apply."""
    module = cpu_ops.EXTENSION.module
    if module is None or q.dtype is not torch.float32 or q.device.type != "cpu":
        return None
    if k_pool.dtype is not torch.float32 or k_pool.device.type != "cpu":
        return None
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    return module.paged_decode_attention(q.contiguous(), k_pool, v_pool, slots, lengths, scale)
