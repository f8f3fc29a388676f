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


# Without top-k, top-p first tries this many of the most likely tokens (a partial sort); only
# when they hold less than top_p of the mass is the whole vocabulary sorted.
TOP_P_CANDIDATES = 256


def candidates(logits: torch.Tensor, top_k: int, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens one row may be sampled from: (logits, token ids), most likely first. top-k
    keeps the k best; top-p then keeps the smallest prefix whose probability (within the top-k,
    if any) reaches top_p. With neither, every token, in id order (nothing to sort)."""
    vocab = logits.shape[-1]
    k = top_k if 0 < top_k < vocab else vocab
    if k == vocab and top_p >= 1.0:
        return logits, torch.arange(vocab)
    values, ids = torch.topk(logits, min(k, TOP_P_CANDIDATES) if k == vocab else k)
    if top_p >= 1.0:
        return values, ids
    # Probabilities over the whole top-k set (the whole vocabulary without top-k).
    log_total = torch.logsumexp(logits if k == vocab else values, dim=-1)
    probs = torch.exp(values - log_total)
    before = torch.cumsum(probs, dim=-1) - probs  # mass of the better tokens
    if k == vocab and before[-1] + probs[-1] < top_p:  # the nucleus is wider: sort everything
        values, ids = torch.sort(logits, descending=True)
        probs = torch.exp(values - log_total)
        before = torch.cumsum(probs, dim=-1) - probs
    # Drop a token once the mass before it already reaches top_p (the first always stays).
    keep = max(1, int((before < top_p).sum()))
    return values[:keep], ids[:keep]


def sample_row(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    if params.greedy:
        return int(torch.argmax(logits))
    values, ids = candidates(logits.float() / params.temperature, params.top_k, params.top_p)
    probs = torch.softmax(values, dim=-1)
    if not bool(torch.isfinite(probs).all()):  # one odd row must not fail the whole step
        return int(ids[torch.argmax(values)])
    return int(ids[torch.multinomial(probs, 1, generator=generator)])


def sample(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator]
) -> list[int]:
    """One token per row. Greedy rows share one argmax; sampled rows draw from their own RNG."""
    greedy = torch.argmax(logits, dim=-1).tolist()
    return [
        greedy[i] if p.greedy else sample_row(logits[i], p, g)
        for i, (p, g) in enumerate(zip(params, generators, strict=True))
    ]
