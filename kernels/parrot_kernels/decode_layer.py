"""Llama decoder layers for a batch of decoding requests as one compiled call (one layer, or
every layer in turn).

With block weights on CPU, a decode step of a small model spends a large share of its time
between operators (the interpreter and torch's dispatcher, thirty layers of a dozen calls);
`decode_layers` runs the layers' operators from C++ (`csrc/decode_layer.cpp`) instead: the same
operators, so the same results as the layers run op by op. It applies to fp32 rows on CPU
fewer than `quant_matmul.DENSE_ROWS` (where the block kernel runs anyway) and returns None
elsewhere, for the caller to run the layer op by op.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from . import cpu_ops, quant_matmul
from .quant_matmul import BlockType

__all__ = ["DecodeKV", "LayerBlocks", "StackBlocks", "decode_layers"]


@dataclass(frozen=True)
class DecodeKV:
    """Where the layers' keys and values live for a step of decodes only: the pools
    [layers, slots, Hkv, D] (the layers the call runs), the slot each new token's key and value
    go to [B], and each request's slots [B, L] (row b's first lengths[b] entries, the new
    token's included)."""

    k_pool: Tensor
    v_pool: Tensor
    write_slots: Tensor
    slots: Tensor
    lengths: Tensor


@dataclass(frozen=True)
class LayerBlocks:
    """A decoder layer's weights: the two RMSNorm weights (fp32) and the four projections as
    blocks (qkv fused by rows, o, gate_up fused by rows, down)."""

    norms: tuple[Tensor, Tensor]
    eps: float
    blocks: tuple[Tensor, Tensor, Tensor, Tensor]
    kinds: tuple[BlockType, BlockType, BlockType, BlockType]
    q_heads: int
    kv_heads: int
    head_dim: int


@dataclass(frozen=True)
class StackBlocks:
    """Consecutive layers' weights (one layer, or the model's all), flattened once as
    `decode_layers` takes them (two norms, four blocks and kinds per layer)."""

    norms: list[Tensor]
    eps: float
    blocks: list[Tensor]
    kinds: list[int]
    q_heads: int
    kv_heads: int
    head_dim: int

    @classmethod
    def of(cls, layers: list[LayerBlocks]) -> StackBlocks:
        first = layers[0]
        shapes = {(la.eps, la.q_heads, la.kv_heads, la.head_dim) for la in layers}
        if len(shapes) != 1:
            raise ValueError("every layer must have the same heads and norm epsilon")
        return cls(
            norms=[n for la in layers for n in la.norms],
            eps=first.eps,
            blocks=[b for la in layers for b in la.blocks],
            kinds=[int(k) for la in layers for k in la.kinds],
            q_heads=first.q_heads,
            kv_heads=first.kv_heads,
            head_dim=first.head_dim,
        )


def decode_layers(x: Tensor, stack: StackBlocks, rope: Tensor, kv: DecodeKV) -> Tensor | None:
    """x [B, hidden] through the stack's layers in one call, the new keys and values written
    into the pools; rope [B, 2, head_dim / 2] (each token's cos, sin). None where it does not
    apply."""
    module = cpu_ops.EXTENSION.module
    if module is None or x.dtype is not torch.float32 or x.device.type != "cpu":
        return None
    if x.shape[0] >= quant_matmul.DENSE_ROWS or kv.k_pool.dtype is not torch.float32:
        return None
    return module.decode_layers(
        x,
        stack.norms,
        stack.eps,
        stack.blocks,
        stack.kinds,
        rope,
        stack.q_heads,
        stack.kv_heads,
        stack.head_dim,
        kv.k_pool,
        kv.v_pool,
        kv.write_slots,
        kv.slots,
        kv.lengths,
        1 / math.sqrt(stack.head_dim),
    )
