"""Next-token sampling as small pure functions over a batch of logits."""

from __future__ import annotations

import torch

from .sampling_params import SamplingParams


def make_generator(params: SamplingParams) -> torch.Generator:
    """Per-request RNG: a fixed seed replays the same draws whatever else is in the batch."""
    gen = torch.Generator()
    if params.sampling_seed is not None:
        gen.manual_seed(params.sampling_seed)
    else:
        gen.seed()
    return gen


def filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask (to -inf) the logits of one row outside top-k and the top-p nucleus."""
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token once the mass before it already reaches top_p (the first always stays).
        drop = (torch.cumsum(probs, dim=-1) - probs) >= top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return logits


def sample_row(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    if params.greedy:
        return int(torch.argmax(logits))
    logits = filter_top_k_top_p(logits.float() / params.temperature, params.top_k, params.top_p)
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def sample(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator]
) -> list[int]:
    """One token per row. Greedy rows share one argmax; sampled rows draw from their own RNG."""
    greedy = torch.argmax(logits, dim=-1).tolist()
    return [
        greedy[i] if p.greedy else sample_row(logits[i], p, g)
        for i, (p, g) in enumerate(zip(params, generators, strict=True))
    ]
