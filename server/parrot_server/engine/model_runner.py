"""Runs one scheduled batch through the model: KV pool, attention, sampling.

All query tokens of a step are flattened into one sequence so that every projection and MLP
is one GEMM over the whole batch; attention works per request against the KV pool
(`PagedAttention`), then the chunks that end a prompt or a decode are sampled.
"""

from __future__ import annotations

import logging
from types import ModuleType

import torch

from parrot_kernels import cpu_shared_prefix
from parrot_kernels import shared_prefix as torch_shared_prefix

from .grammar import mask_logits
from .kv_pool import KVPool
from .model import LlamaModel
from .paged_attention import PagedAttention
from .request import TokenLogprob
from .sampler import SampleRow, make_generator, sample_batch
from .scheduler import Chunk

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

    @torch.inference_mode()
    def run(self, chunks: list[Chunk]) -> list[tuple[int, TokenLogprob | None] | None]:
        """Compute the chunks; returns the sampled token of each chunk and its log-probability
        when the request asked (None if not sampled)."""
        order = sorted(range(len(chunks)), key=lambda i: chunks[i].length != 1)
        ordered = [chunks[i] for i in order]
        ids: list[int] = []
        positions: list[int] = []
        for c in ordered:
            ids.extend(c.request.tokens[c.start : c.start + c.length])
            positions.extend(range(c.start, c.start + c.length))
        attention = PagedAttention(
            self.pool,
            ordered,
            self.device,
            self.min_shared_prefix,
            self.share_prefill,
            self.kernels,
        )
        self.shared_prefix_queries += attention.num_shared_queries
        hidden = self.model(
            torch.tensor(ids, dtype=torch.long, device=self.device),
            torch.tensor(positions, dtype=torch.long, device=self.device),
            attention,
        )
        # Only the last row of a sampling chunk needs logits (the LM head is the largest GEMM).
        ends, sampled = [], []
        row = 0
        for c in ordered:
            row += c.length
            if c.sample:
                ends.append(row - 1)
                sampled.append(c)
        result: dict[int, tuple[int, TokenLogprob | None]] = {}
        if sampled:
            logits = self.model.compute_logits(hidden[torch.tensor(ends, device=self.device)])
            logits = logits.float().cpu()
            mask_logits(logits, [c.request.grammar for c in sampled])
            for c in sampled:
                if c.request.rng is None:
                    c.request.rng = make_generator(c.request.sampling)
            rows = [
                SampleRow(r.sampling, r.prompt_ids, r.output_ids, r.rng)
                for r in (c.request for c in sampled)
            ]
            tokens = sample_batch(logits, rows, self.end_ids)
            result = {id(c): t for c, t in zip(sampled, tokens, strict=True)}
        return [result.get(id(c)) for c in chunks]
