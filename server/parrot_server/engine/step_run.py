"""One scheduled batch on its way through the model, which can stop between layers and go on
later.

All query tokens of a step are flattened into one sequence so that every projection and MLP
is one GEMM over the whole batch; attention works per request against the KV pool
(`PagedAttention`), then the chunks that end a prompt or a decode are sampled. On a CPU a
step of background prefill takes up to a second; stopping it after a layer lets an urgent
request's steps run at once, and nothing computed is lost: the hidden states wait here, and
the pool slots the batch writes belong to its requests until it is finished.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import torch

from .batch import Batch, Chunk
from .grammar import mask_logits
from .kv_pool import KVPool
from .model import LlamaModel
from .paged_attention import PagedAttention
from .request import TokenLogprob
from .sampler import SampleRow, request_seed, sample_batch

Sampled = tuple[int, TokenLogprob | None]


class StepRun:
    def __init__(
        self,
        model: LlamaModel,
        device: torch.device,
        pool: KVPool,
        chunks: list[Chunk],
        kernels: ModuleType,
        min_shared_prefix: int,
        share_prefill: bool,
        end_ids: tuple[int, ...],
    ) -> None:
        self.model = model
        self.chunks = chunks
        self.end_ids = end_ids
        self.device = device
        # Decodes first: the attention and the compiled decode layer expect them there.
        self.ordered = sorted(chunks, key=lambda c: not c.decoding)
        ids: list[int] = []
        positions: list[int] = []
        for c in self.ordered:
            ids.extend(c.token_ids)
            positions.extend(range(c.start, c.start + c.length))
        self.attention = PagedAttention(
            pool, self.ordered, device, min_shared_prefix, share_prefill, kernels
        )
        with torch.inference_mode():
            self.hidden, self.rope = model.embed(
                torch.tensor(ids, dtype=torch.long, device=device),
                torch.tensor(positions, dtype=torch.long, device=device),
            )
        self.next_layer = 0

    @property
    def done(self) -> bool:
        return self.next_layer == len(self.model.layers)

    def advance(self, stop: Callable[[], bool] | None = None) -> bool:
        """Run the remaining layers, leaving after any one of them for which `stop()` is true.
        Returns whether all layers ran."""
        self.hidden, self.next_layer = self.model.run_layers(
            self.hidden, self.rope, self.attention, self.next_layer, stop
        )
        return self.done

    @torch.inference_mode()
    def finish(self) -> list[list[Sampled]]:
        """Run what is left, then sample: for each chunk (in the order given), the tokens it
        samples with their log-probabilities when the request asked. One token for a chunk
        that ends a prompt or decodes, none for one inside a prompt; a chunk with a draft gets
        the model's token after each draft token it agreed with, and one more."""
        self.advance()
        hidden = self.model.norm(self.hidden)
        # Only sampled rows need logits (the LM head is the largest GEMM): a sampling chunk's
        # last row, or every row of a chunk with a draft.
        rows: list[int] = []
        sampled: list[tuple[Chunk, int]] = []  # (chunk, its rows sampled)
        end = 0
        for c in self.ordered:
            end += c.length
            if c.sample:
                n = c.length if c.draft else 1
                rows.extend(range(end - n, end))
                sampled.append((c, n))
        result: dict[int, list[Sampled]] = {}
        if sampled:
            logits = self.model.compute_logits(hidden[torch.tensor(rows, device=self.device)])
            logits = logits.float().cpu()
            mask_logits(logits, [c.request.grammar for c, n in sampled for _ in range(n)])
            sample_rows = []
            for c, n in sampled:
                r = c.request
                if r.seed is None:
                    r.seed = request_seed(r.sampling)
                for i in range(n):  # row i follows the draft's first i tokens
                    output = r.output_ids + list(c.draft[:i]) if i else r.output_ids
                    sample_rows.append(SampleRow(r.sampling, r.prompt_ids, output, r.seed))
            tokens = iter(sample_batch(logits, sample_rows, self.end_ids))
            for c, n in sampled:
                result[id(c)] = _verified([next(tokens) for _ in range(n)], c.draft)
        return [result.get(id(c), []) for c in self.chunks]


def _verified(tokens: list[Sampled], draft: tuple[int, ...]) -> list[Sampled]:
    """The rows' tokens up to and including the first that differs from the draft (all of
    them when the whole draft was right)."""
    for i, d in enumerate(draft):
        if tokens[i][0] != d:
            return tokens[: i + 1]
    return tokens


@dataclass(frozen=True)
class SetAside:
    """A step stopped between layers for more urgent work: its batch, its run, and the
    highest priority in it (what must no longer be waiting for it to go on)."""

    batch: Batch
    run: StepRun
    top: int


def stop_rule(
    urgent: Callable[[], int | None] | None,
    top: int,
    slice_layers: int | None,
    more_urgent: Callable[[int], bool],
) -> Callable[[], bool]:
    """What a step whose most urgent request has priority `top` asks between layers: whether to
    stop there. It stops when `urgent()` (the most urgent submission on its way, or None) is
    above `top`; on lower-priority work's turn (`slice_layers` given), also after that many
    layers while `more_urgent(top)` work is waiting or running."""
    layers = 0

    def stop() -> bool:
        nonlocal layers
        layers += 1
        if slice_layers is not None and layers >= slice_layers and more_urgent(top):
            return True
        pending = None if urgent is None else urgent()
        return pending is not None and pending > top

    return stop
