"""Engine configuration: every limit of the embedded engine, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass

DTYPES = ("auto", "float32", "bfloat16", "float16")
GEMM_DTYPES = ("auto", "float32", "bfloat16")
DENSE_WEIGHTS_MB = 512


@dataclass(frozen=True)
class EngineConfig:
    model: str | None = None  # GGUF file or HF dir; None = the bundled SmolLM2-135M-Instruct
    chat_template: str | None = None  # replaces the model's: a Jinja file or the template text
    device: str = "cpu"  # a torch device: "cpu", "cuda", "cuda:1", ...
    # "auto": on CPU a GGUF's quantised weights stay as blocks (the rest fp32), else float32;
    # "float32" / "bfloat16" / "float16" expand every weight to that type. bf16 matmul is
    # much slower than fp32 on CPUs without AMX.
    dtype: str = "auto"
    # With block weights: the type of the dense GEMM that multiplies many rows at once (prefill
    # chunks, batches from 48 rows): "auto" = bfloat16 where this CPU runs it faster than
    # float32 (bf16 dot-product instructions or AMX), else float32.
    gemm_dtype: str = "auto"
    # With block weights: MB of memory for weights also kept dequantised in the GEMM's type,
    # layer by layer from the first, so that a prefill step need not dequantise them again
    # (which writes each weight out anew); 0 dequantises every weight for every such step.
    dense_weights_mb: int = DENSE_WEIGHTS_MB
    kv_pool_tokens: int = 32768  # KV slots preallocated (tokens; each holds K and V of every layer)
    max_context_len: int | None = None  # default: the model's max_position_embeddings
    max_step_tokens: int = 512  # tokens computed per step (prefill chunk + decodes)
    max_running_requests: int = 64  # decode batch size cap
    max_queued_requests: int = 1024  # waiting requests beyond this are refused (overloaded)
    num_threads: int | None = None  # torch intra-op threads; default: all cores
    # Requests of one step (decoding, or prefilling) that share a cached prefix at least this
    # long attend to it together (prefix KV read once per group); 0 turns the kernel off.
    shared_prefix_min_tokens: int = 64
    # Also group prefill chunks that share a cached prefix (e.g. the maps of a map-reduce over
    # one document), so the prefix is read once per group; False turns it off.
    shared_prefix_prefill: bool = True
    # A new request whose prompt shares at least this many more tokens with a prompt still
    # being prefilled than the cache holds waits for that prefill (whose KV is cached chunk by
    # chunk) instead of computing the same tokens again; 0 admits it at once.
    prefix_wait_min_tokens: int = 32
    # While a request runs whose priority is above others' (a chat turn beside batch work),
    # the lower-priority requests wait, and a step of theirs under way stops between layers
    # when such a request arrives; after this many steps in a row they get a turn of
    # `background_slice_layers` layers of one step. 0: they are never held back, steps are
    # only filled in priority order.
    background_pause_steps: int = 64
    background_slice_layers: int = 8
    # For `URGENT_LINGER_SECONDS` after a more urgent request was served (a chat's next turn is
    # usually on its way), a step of lower-priority work computes at most this many tokens: a
    # shorter step has shorter layers, and an urgent arrival waits for the layer under way.
    # 0: steps of `max_step_tokens` always.
    background_step_tokens: int = 128
    # A request (not a constrained one) drafts up to this many tokens from its own text (prompt
    # lookup) and verifies them in its decode, keeping those the model agrees with (greedy or
    # sampled, see draft.py); 0 turns it off. Only
    # while at most `speculative_max_batch` requests decode: in larger batches an extra row
    # costs about what it saves.
    speculative_tokens: int = 4
    speculative_max_batch: int = 4

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(
                f"EngineConfig.dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}"
            )
        if self.gemm_dtype not in GEMM_DTYPES:
            raise ValueError(
                f"EngineConfig.gemm_dtype must be one of {', '.join(GEMM_DTYPES)}, "
                f"got {self.gemm_dtype!r}"
            )
        for name, least in (
            ("kv_pool_tokens", 1),
            ("dense_weights_mb", 0),
            ("max_step_tokens", 1),
            ("max_running_requests", 1),
            ("max_queued_requests", 1),
            ("background_slice_layers", 1),
            ("background_pause_steps", 0),
            ("background_step_tokens", 0),
            ("prefix_wait_min_tokens", 0),
            ("speculative_tokens", 0),
            ("speculative_max_batch", 0),
        ):
            if getattr(self, name) < least:
                raise ValueError(
                    f"EngineConfig.{name} must be >= {least}, got {getattr(self, name)}"
                )

    @property
    def threads(self) -> int:
        return self.num_threads or os.cpu_count() or 1
