"""Our Llama-family forward (Llama, SmolLM, Mistral, Qwen2): inference only, no KV cache.

The model sees one flat list of N tokens (every request of a step) with their positions.
Attention is the only place where requests interact, so it is delegated to an `AttentionFn`
the caller supplies; everything else is a few large GEMMs over all N tokens, for which q/k/v
and gate/up are stored fused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from parrot_kernels.decode_layer import DecodeKV
from parrot_kernels.layer_ops import add_rms_norm, rms_norm, rope_, silu_mul

from .config import ModelConfig
from .rope import rope_tables


class AttentionFn(Protocol):
    def __call__(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """q: [N, num_heads, head_dim], k and v: [N, num_kv_heads, head_dim], RoPE applied.
        Returns [N, num_heads, head_dim]."""
        ...

    def decode_kv(self, layer: int | None) -> DecodeKV | None:
        """Where the layer's keys and values live when every token of the step is one
        request's next token (for a layer run as one compiled call); else None. The pools
        keep a layer dimension: that layer's alone, or for `layer` None every layer's (all
        layers as one call)."""
        ...


# x [B, hidden], rope [B, 2, head_dim / 2], where the keys and values live -> the layer's
# output, or None where the compiled call does not apply.
CompiledDecode = Callable[[Tensor, Tensor, DecodeKV], Tensor | None]


class DenseCausalAttention:
    """AttentionFn for one sequence without a cache: causal attention over the N tokens given."""

    def decode_kv(self, layer: int | None) -> DecodeKV | None:
        return None

    def __call__(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))  # [1, heads, N, D]
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return out.squeeze(0).transpose(0, 1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        c = config
        self.layer, self.head_dim = layer, c.head_dim
        self.q_dim, self.kv_dim = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
        self.rotated_heads = c.num_heads + c.num_kv_heads
        self.attn_norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.qkv = nn.Linear(c.hidden_size, self.q_dim + 2 * self.kv_dim, bias=c.attention_bias)
        self.o_proj = nn.Linear(self.q_dim, c.hidden_size, bias=c.output_bias)
        self.mlp_norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.gate_up = nn.Linear(c.hidden_size, 2 * c.intermediate_size, bias=False)
        self.down = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)
        # The whole layer as one call for decode steps, where the weights allow (set when
        # block weights are installed).
        self.compiled_decode: CompiledDecode | None = None

    def forward(self, x: Tensor, rope: Tensor, attention: AttentionFn) -> Tensor:
        """x [N, hidden]; rope [N, 2, head_dim / 2]: each token's cos and sin."""
        if self.compiled_decode is not None:
            kv = attention.decode_kv(self.layer)
            out = None if kv is None else self.compiled_decode(x, rope, kv)
            if out is not None:
                return out
        n, hd = x.shape[0], self.head_dim
        qkv = self.qkv(self.attn_norm(x))
        rope_(qkv, rope, self.rotated_heads, hd)  # q's and k's heads lead each row
        q, k, v = qkv.split([self.q_dim, self.kv_dim, self.kv_dim], -1)
        out = attention(self.layer, q.view(n, -1, hd), k.view(n, -1, hd), v.view(n, -1, hd))
        norm = self.mlp_norm
        x, h = add_rms_norm(x, self.o_proj(out.reshape(n, self.q_dim)), norm.weight, norm.eps)
        return x + self.down(silu_mul(self.gate_up(h)))


class Embedding(nn.Embedding):
    """The token embedding; `project` is the tied LM head (hidden -> vocab logits)."""

    def project(self, hidden: Tensor) -> Tensor:
        return F.linear(hidden, self.weight)


class LlamaModel(nn.Module):
    """Parameter names are ours (fused qkv / gate_up); `weights.py` maps HF checkpoints. Made
    to be filled by `load_model` (built on the meta device, weights assigned), so the
    embedding is left uninitialised."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        # No random init: on the meta device it would import torch._refs, a second per process.
        self.embed_tokens: nn.Module = Embedding(
            config.vocab_size,
            config.hidden_size,
            _weight=torch.empty(config.vocab_size, config.hidden_size),
        )
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = (
            None
            if config.tie_word_embeddings
            else nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        )
        # Derived from the config, never loaded: kept out of the state dict.
        self.register_buffer("rope", rope_tables(config), persistent=False)
        # Every layer as one call for decode steps, where every layer has one (set when block
        # weights are installed).
        self.compiled_decode: CompiledDecode | None = None

    @torch.inference_mode()
    def forward(self, input_ids: Tensor, positions: Tensor, attention: AttentionFn) -> Tensor:
        """input_ids, positions: [N]. Returns the final-normed hidden states [N, hidden]."""
        x, rope = self.embed(input_ids, positions)
        x, _ = self.run_layers(x, rope, attention)
        return self.norm(x)

    @torch.inference_mode()
    def embed(self, input_ids: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """The layers' input [N, hidden] and each token's rotary table [N, 2, head_dim / 2]."""
        x = self.embed_tokens(input_ids)
        return x, self.rope[positions].to(x.dtype)

    @torch.inference_mode()
    def run_layers(
        self,
        x: Tensor,
        rope: Tensor,
        attention: AttentionFn,
        start: int = 0,
        stop: Callable[[], bool] | None = None,
    ) -> tuple[Tensor, int]:
        """Layers from `start` on, asking `stop()` after each one (but the last) whether to
        leave the rest for later. Returns the hidden states and the next layer to run (the
        number of layers when all ran); the final norm is left to the caller. A decode-only
        step runs whole as one compiled call where there is one (it is short: no stop)."""
        n = len(self.layers)
        if start == 0 and self.compiled_decode is not None:
            kv = attention.decode_kv(None)
            out = None if kv is None else self.compiled_decode(x, rope, kv)
            if out is not None:
                return out, n
        for i in range(start, n):
            x = self.layers[i](x, rope, attention)
            if stop is not None and i + 1 < n and stop():
                return x, i + 1
        return x, n

    @torch.inference_mode()
    def compute_logits(self, hidden: Tensor) -> Tensor:
        """[M, hidden] -> fp32 [M, vocab]. Call it on the rows that need logits only: the LM
        head is the largest GEMM of the model."""
        head = self.embed_tokens.project if self.lm_head is None else self.lm_head
        return head(hidden).float()
