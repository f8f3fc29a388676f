"""Model hyper-parameters: one frozen dataclass, read from and written to HF config.json dicts."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

# model_type -> the transformers class a config.json of ours names.
HF_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
}


class RopeScalingKind(enum.Enum):
    LINEAR = "linear"  # positions (equivalently frequencies) divided by `factor`
    LLAMA3 = "llama3"  # llama-3.1: low frequencies divided by `factor`, a smooth band between


@dataclass(frozen=True)
class RopeScaling:
    kind: RopeScalingKind
    factor: float
    low_freq_factor: float = 1.0  # LLAMA3 only, as are the next two
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def to_hf(self) -> dict[str, Any]:
        d: dict[str, Any] = {"rope_type": self.kind.value, "factor": self.factor}
        if self.kind is RopeScalingKind.LLAMA3:
            d.update(
                low_freq_factor=self.low_freq_factor,
                high_freq_factor=self.high_freq_factor,
                original_max_position_embeddings=self.original_max_position_embeddings,
            )
        return d


@dataclass(frozen=True)
class ModelConfig:
    architecture: str  # "llama" | "mistral" | "qwen2": informational, the math is the same
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: RopeScaling | None
    max_position_embeddings: int
    tie_word_embeddings: bool
    attention_bias: bool  # bias on q/k/v (Qwen2; Llama's attention_bias also adds one to o_proj)
    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]

    @property
    def output_bias(self) -> bool:
        """Whether o_proj has a bias: only Llama's `attention_bias` puts one there."""
        return self.attention_bias and self.architecture == "llama"

    @classmethod
    def from_hf_config(cls, d: dict[str, Any]) -> ModelConfig:
        """Read an HF config.json dict (transformers 4 or 5 layout). ValueError if it describes
        something our forward would compute wrongly."""
        arch = d.get("model_type")
        if arch not in HF_ARCHITECTURES:
            raise ValueError(f"unsupported model_type {arch!r}")
        if d.get("hidden_act", "silu") != "silu":
            raise ValueError(f"unsupported hidden_act {d['hidden_act']!r}")
        if d.get("mlp_bias"):
            raise ValueError("unsupported mlp_bias=true")
        heads = d["num_attention_heads"]
        max_pos = d.get("max_position_embeddings", 4096)
        # Dense causal attention equals sliding-window attention as long as no sequence is longer
        # than the window, so a window is honoured by capping the context instead.
        window = d.get("sliding_window")
        if window and (arch == "mistral" or d.get("use_sliding_window")):
            max_pos = min(max_pos, window)
        # transformers 5 nests theta and scaling under rope_parameters; 4 keeps them top level.
        rope = dict(d.get("rope_parameters") or d.get("rope_scaling") or {})
        theta = rope.get("rope_theta") or d.get("rope_theta") or 10000.0
        eos = d.get("eos_token_id")
        eos = () if eos is None else (eos,) if isinstance(eos, int) else tuple(eos)
        return cls(
            architecture=arch,
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"],
            num_layers=d["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=d.get("num_key_value_heads") or heads,
            head_dim=d.get("head_dim") or d["hidden_size"] // heads,
            rms_norm_eps=d.get("rms_norm_eps", 1e-6),
            rope_theta=float(theta),
            rope_scaling=_rope_scaling(rope, d.get("max_position_embeddings", max_pos)),
            max_position_embeddings=max_pos,
            tie_word_embeddings=d.get("tie_word_embeddings", False),
            # Qwen2 always has q/k/v bias and its config has no flag for it.
            attention_bias=arch == "qwen2" or bool(d.get("attention_bias", False)),
            bos_token_id=d.get("bos_token_id"),
            eos_token_ids=eos,
        )

    def to_hf_config(self) -> dict[str, Any]:
        """A config.json that transformers loads as the matching *ForCausalLM. Uses the
        transformers-4 keys (rope_theta, rope_scaling), which transformers 5 still reads."""
        d: dict[str, Any] = {
            "architectures": [HF_ARCHITECTURES[self.architecture]],
            "model_type": self.architecture,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling.to_hf() if self.rope_scaling else None,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": (
                list(self.eos_token_ids) if len(self.eos_token_ids) != 1 else self.eos_token_ids[0]
            ),
        }
        if self.architecture == "llama":
            d["attention_bias"] = self.attention_bias
        elif self.architecture == "mistral":
            d["sliding_window"] = None  # already folded into max_position_embeddings
        else:
            d["use_sliding_window"] = False
        return d


def _rope_scaling(rope: dict[str, Any], max_pos: int) -> RopeScaling | None:
    kind = rope.get("rope_type") or rope.get("type") or "default"
    if kind == "default":
        return None
    try:
        kind = RopeScalingKind(kind)
    except ValueError:
        raise ValueError(f"unsupported rope scaling {kind!r}") from None
    if kind is RopeScalingKind.LINEAR:
        return RopeScaling(kind, float(rope["factor"]))
    return RopeScaling(
        kind,
        float(rope["factor"]),
        low_freq_factor=float(rope["low_freq_factor"]),
        high_freq_factor=float(rope["high_freq_factor"]),
        original_max_position_embeddings=int(
            rope.get("original_max_position_embeddings") or max_pos
        ),
    )
