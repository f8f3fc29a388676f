"""The model with its KV pool and attention kernels: starts each scheduled batch's run
through the model (`StepRun`)."""

from __future__ import annotations

import logging
from types import ModuleType

import torch

from parrot_kernels import cpu_shared_prefix
from parrot_kernels import shared_prefix as torch_shared_prefix

from .batch import Chunk
from .kv_pool import KVPool
from .model import LlamaModel
from .step_run import StepRun

log = logging.getLogger(__name__)


def shared_prefix_kernels(device: torch.device) -> ModuleType:
    """The shared-prefix attention backend for a device (both have the same API).

    CUDA: the Triton split-KV kernels, which read the prefix once per group straight from HBM.
    Elsewhere the torch path (one GEMM per KV head), which is what runs fast on CPU, with decode
    through the compiled CPU extension once it is built (in the background from here, so a
    first start on a machine is not held up by the compiler; until then, or without a
    compiler, decode takes the torch path).
    """
    if device.type == "cuda":
        try:
            from parrot_kernels import triton_shared_prefix
        except ImportError:  # triton missing: still correct, only slower
            log.warning("triton is not installed: shared-prefix attention uses the torch path")
        else:
            return triton_shared_prefix
    if device.type == "cpu":
        cpu_shared_prefix.start_loading()
        return cpu_shared_prefix
    return torch_shared_prefix


class ModelRunner:
    def __init__(
        self,
        model: LlamaModel,
        num_slots: int,
        min_shared_prefix: int = 0,
        share_prefill: bool = False,
        end_ids: tuple[int, ...] = (),
    ) -> None:
        self.model = model
        self.end_ids = end_ids  # EOS ids, masked until a request's min_new_tokens
        self.share_prefill = share_prefill
        self.min_shared_prefix = min_shared_prefix  # 0: never use the shared-prefix kernel
        self.shared_prefix_queries = 0  # query tokens served by the shared-prefix kernel
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.kernels = (
            shared_prefix_kernels(self.device) if min_shared_prefix else torch_shared_prefix
        )
        cfg = model.config
        self.pool = KVPool(
            cfg.num_layers, num_slots, cfg.num_kv_heads, cfg.head_dim, self.dtype, self.device
        )

    def start(self, chunks: list[Chunk]) -> StepRun:
        """The batch's run through the model, not started yet (`StepRun.advance`, `finish`)."""
        run = StepRun(
            self.model,
            self.device,
            self.pool,
            chunks,
            self.kernels,
            self.min_shared_prefix,
            self.share_prefill,
            self.end_ids,
        )
        self.shared_prefix_queries += run.attention.num_shared_queries
        return run
