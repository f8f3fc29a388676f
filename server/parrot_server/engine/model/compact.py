"""Weights kept as GGUF blocks in memory: the modules that multiply them, and the loading step
that puts them in place of the dense layers of a `LlamaModel`.

A quantised GGUF (Q4_0 / Q4_1 / Q8_0 tensors) is read straight from the file: each such tensor
stays as its bytes (`BlockWeight`), rows reordered where llama.cpp permuted Q and K, fused along
rows like the dense weights. Tensors of other types are dequantised to fp32 as before. Results
equal the dequantised model's up to float rounding; memory is the file's size, not 5x it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
from torch import Tensor, nn

from parrot_kernels import quant_matmul
from parrot_kernels.decode_layer import LayerBlocks, StackBlocks, decode_layers
from parrot_kernels.quant_matmul import BlockType

from .config import ModelConfig
from .gguf import gguf_tensors, read_gguf
from .llama import Block, CompiledDecode, LlamaModel

__all__ = [
    "BlockWeight",
    "QuantEmbedding",
    "QuantLinear",
    "compact_state",
    "install_compact",
    "keep_dense_weights",
]


@dataclass(frozen=True)
class BlockWeight:
    """A [rows, in_features] weight as GGML blocks: `data` is uint8 [rows, row bytes], each row
    grouped as `quant_matmul.from_gguf` makes it."""

    data: Tensor
    kind: BlockType
    in_features: int

    @property
    def rows(self) -> int:
        return self.data.shape[0]

    def dense(self) -> Tensor:
        return quant_matmul.dequantize(self.data, self.kind, self.in_features)


class QuantLinear(nn.Module):
    """`nn.Linear` over a `BlockWeight` (the bias, if any, stays fp32); many rows at once go
    through a dense GEMM in `gemm_dtype` (see `quant_matmul.linear`), over the weight
    dequantised once if `keep_dense` was called, else dequantised for each such call."""

    def __init__(
        self,
        weight: BlockWeight,
        bias: Tensor | None = None,
        gemm_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.gemm_dtype = gemm_dtype
        self.kind, self.in_features, self.out_features = (
            weight.kind,
            weight.in_features,
            weight.rows,
        )
        self.register_buffer("qweight", weight.data)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        # Derived from qweight, never saved.
        self.dense: Tensor | None
        self.register_buffer("dense", None, persistent=False)

    def keep_dense(self) -> int:
        """Keep the weight dequantised in `gemm_dtype` for the many-row GEMMs; its bytes."""
        self.dense = quant_matmul.dequantize(
            self.qweight, self.kind, self.in_features, self.gemm_dtype
        )
        return self.dense_bytes

    @property
    def dense_bytes(self) -> int:
        """Bytes of the dequantised copy (0 without one)."""
        return 0 if self.dense is None else self.dense.numel() * self.dense.element_size()

    def forward(self, x: Tensor) -> Tensor:
        return quant_matmul.linear(
            x, self.qweight, self.kind, self.in_features, self.bias, self.gemm_dtype, self.dense
        )

    def extra_repr(self) -> str:
        gemm = str(self.gemm_dtype).removeprefix("torch.")
        kept = ", kept dense" if self.dense is not None else ""
        return f"{self.in_features}, {self.out_features}, {self.kind.name}, gemm {gemm}{kept}"


class QuantEmbedding(nn.Module):
    """Token embedding over a `BlockWeight`; `project` is the tied LM head."""

    def __init__(self, weight: BlockWeight) -> None:
        super().__init__()
        self.kind, self.embedding_dim = weight.kind, weight.in_features
        self.register_buffer("qweight", weight.data)

    def forward(self, ids: Tensor) -> Tensor:
        rows = self.qweight.index_select(0, ids.reshape(-1))
        out = quant_matmul.dequantize(rows, self.kind, self.embedding_dim)
        return out.view(*ids.shape, self.embedding_dim)

    def project(self, hidden: Tensor) -> Tensor:
        return quant_matmul.linear(hidden, self.qweight, self.kind, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"{self.qweight.shape[0]}, {self.embedding_dim}, {self.kind.name}"


def concat_rows(parts: Sequence[Tensor | BlockWeight]) -> Tensor | BlockWeight:
    """Fuse weights along rows: blocks stay blocks when all parts are of one kind."""
    first = parts[0]
    if all(isinstance(p, BlockWeight) and p.kind is getattr(first, "kind", None) for p in parts):
        return BlockWeight(torch.cat([p.data for p in parts]), first.kind, first.in_features)
    return torch.cat([p.dense() if isinstance(p, BlockWeight) else p for p in parts])


def compact_state(path: Path, config: ModelConfig) -> dict[str, Tensor | BlockWeight]:
    """The GGUF's tensors under HF names: supported quantised ones as blocks, the rest fp32."""
    reader = read_gguf(path)
    out: dict[str, Tensor | BlockWeight] = {}
    for name, t, rows in gguf_tensors(path, reader, config):
        try:
            kind = BlockType(int(t.tensor_type))
        except ValueError:
            kind = None
        if kind is None or t.data.ndim != 2:  # 1-D tensors are norms and biases: fp32
            dense = gguf.quants.dequantize(t.data, t.tensor_type)
            out[name] = torch.from_numpy(np.array(rows(dense), dtype=np.float32))
        else:
            k = int(t.shape[0])
            blocks = torch.from_numpy(np.array(rows(t.data)))  # a copy: the file is unmapped
            data = quant_matmul.from_gguf(blocks, kind, k)
            out[name] = BlockWeight(data, kind, k)
    return out


def install_compact(
    model: LlamaModel,
    state: dict[str, Tensor | BlockWeight],
    gemm_dtype: torch.dtype = torch.float32,
) -> dict[str, Tensor]:
    """Put a quantised module in place of each dense layer whose weight is blocks (linear
    layers' many-row GEMM in `gemm_dtype`); returns the state dict (dense tensors and the
    blocks' buffers) for `load_state_dict(assign=True)`."""
    dense: dict[str, Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, BlockWeight):
            dense[key] = value
            continue
        owner, _, leaf = key.rpartition(".")
        if leaf != "weight":
            raise ValueError(f"{key}: only weights can be quantised")
        module = model.get_submodule(owner)
        parent_name, _, child = owner.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if isinstance(module, nn.Embedding):
            setattr(parent, child, QuantEmbedding(value))
        elif isinstance(module, nn.Linear):
            bias = state.get(f"{owner}.bias")
            setattr(parent, child, QuantLinear(value, bias, gemm_dtype))
        else:
            raise ValueError(f"{key}: no quantised form of {type(module).__name__}")
        dense[f"{owner}.qweight"] = value.data
    return dense


def keep_dense_weights(model: nn.Module, budget_bytes: int) -> int:
    """Keep block linears' weights dequantised for their many-row GEMMs (prompt chunks), in
    module order, each one that still fits in `budget_bytes`; returns the bytes kept. Costs
    memory (a bf16 copy takes over three times a Q4 weight's bytes) to spare each prompt step
    writing every weight out again; decode rows still read the blocks."""
    used = 0
    for module in model.modules():
        if not isinstance(module, QuantLinear):
            continue
        size = module.out_features * module.in_features * module.gemm_dtype.itemsize
        if module.dense is None and used + size <= budget_bytes:
            module.keep_dense()
        used += module.dense_bytes
    return used


def layer_blocks(block: Block) -> LayerBlocks | None:
    """The layer's weights as the compiled decode call takes them, when its projections are
    all blocks without biases; None otherwise. Call once the weights are loaded."""
    projections = [block.qkv, block.o_proj, block.gate_up, block.down]
    if not all(isinstance(p, QuantLinear) and p.bias is None for p in projections):
        return None
    return LayerBlocks(
        norms=(block.attn_norm.weight.data, block.mlp_norm.weight.data),
        eps=block.attn_norm.eps,
        blocks=tuple(p.qweight for p in projections),
        kinds=tuple(p.kind for p in projections),
        q_heads=block.q_dim // block.head_dim,
        kv_heads=block.kv_dim // block.head_dim,
        head_dim=block.head_dim,
    )


def compile_decode(model: LlamaModel) -> None:
    """Give each layer, and the model when every layer has one, its compiled decode call."""
    layers = [layer_blocks(block) for block in model.layers]
    for block, layer in zip(model.layers, layers, strict=True):
        block.compiled_decode = None if layer is None else _compiled([layer])
    if all(layer is not None for layer in layers):
        model.compiled_decode = _compiled(layers)


def _compiled(layers: list[LayerBlocks]) -> CompiledDecode:
    stack = StackBlocks.of(layers)
    return lambda x, rope, kv: decode_layers(x, stack, rope, kv)
