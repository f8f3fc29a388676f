"""Engine configuration: every limit of the embedded engine, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class EngineConfig:
    model: str | None = None  # GGUF file or HF dir; None = the bundled SmolLM2-135M-Instruct
    device: str = "cpu"
    dtype: str = "float32"  # fp32 on CPU: bf16 matmul is ~50x slower on AVX2 machines
    kv_pool_tokens: int = (
        32768  # KV slots preallocated (tokens, all layers); SmolLM2-135M: 46 KB each
    )
    max_context_len: int | None = None  # default: the model's max_position_embeddings
    max_step_tokens: int = 512  # tokens computed per step (prefill chunk + decodes)
    max_running_requests: int = 64  # decode batch size cap
    max_queued_requests: int = 1024  # waiting requests beyond this are refused (overloaded)
    num_threads: int | None = None  # torch intra-op threads; default: all cores
    # Requests of one step (decoding, or prefilling) that share a cached prefix at least this
    # long attend to it together (prefix KV read once per group); 0 turns the kernel off.
    shared_prefix_min_tokens: int = 64
    # Also group prefill chunks. Off by default: on CPU a prefill chunk is compute-bound and
    # torch's fused SDPA beats the kernel's unfused softmax (measured 0.72x, docs/benchmarks.md).
    shared_prefix_prefill: bool = False

    def __post_init__(self) -> None:
        for name in (
            "kv_pool_tokens",
            "max_step_tokens",
            "max_running_requests",
            "max_queued_requests",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"EngineConfig.{name} must be >= 1, got {getattr(self, name)}")

    @property
    def threads(self) -> int:
        return self.num_threads or os.cpu_count() or 1
