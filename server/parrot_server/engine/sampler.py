"""Next-token sampling as small pure functions over a batch of logits.

Order per row: logit processors (grammar mask elsewhere, then penalties, `logit_bias`, the
`min_new_tokens` mask), then log-probabilities when asked (of these processed logits, before
temperature, so at temperature 0 the sampled token is the most likely one), then temperature,
top-k, top-p, min-p and the draw. Rows whose parameters change nothing skip every processor.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .request import TokenLogprob
from .sampling_params import SamplingParams


def request_seed(params: SamplingParams) -> int:
    """A request's seed: the one it gave, else a fresh one."""
    if params.sampling_seed is not None:
        return params.sampling_seed
    return random.getrandbits(63)


def position_generator(seed: int, position: int) -> torch.Generator:
    """The RNG for a request's output token at `position`. Each draw depends on the seed and the
    token's place only, so a seeded request gives the same tokens whatever else is in the batch
    and however many of its tokens a step verifies (drafts, draft.py)."""
    mixed = (seed + (position + 1) * 0x9E3779B97F4A7C15) & _MASK64  # splitmix64
    mixed = ((mixed ^ (mixed >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    mixed = ((mixed ^ (mixed >> 27)) * 0x94D049BB133111EB) & _MASK64
    return torch.Generator().manual_seed((mixed ^ (mixed >> 31)) >> 1)


_MASK64 = (1 << 64) - 1


# -- logit processors -------------------------------------------------------------------------


def apply_penalties(
    logits: torch.Tensor,
    prompt_ids: Sequence[int],
    output_ids: Sequence[int],
    frequency: float = 0.0,
    presence: float = 0.0,
    repetition: float = 1.0,
) -> torch.Tensor:
    """One row's logits penalised (a new tensor). Repetition (CTRL): every token seen in the
    prompt or output has a positive logit divided by `repetition`, a negative one multiplied.
    Then OpenAI's: `frequency` times the token's count in the output, plus `presence` once if
    it occurs there, is subtracted."""
    out = logits.clone()
    if repetition != 1.0:
        seen = torch.tensor(sorted(set(prompt_ids).union(output_ids)), dtype=torch.long)
        if len(seen):
            vals = out[seen]
            out[seen] = torch.where(vals > 0, vals / repetition, vals * repetition)
    if (frequency or presence) and output_ids:
        counts = torch.bincount(torch.tensor(output_ids, dtype=torch.long), minlength=len(out))
        counts = counts[: len(out)].to(out.dtype)
        out -= frequency * counts + presence * (counts > 0).to(out.dtype)
    return out


def apply_logit_bias(logits: torch.Tensor, bias: Sequence[tuple[int, float]]) -> torch.Tensor:
    """`bias`'s values added to its tokens' logits (a new tensor)."""
    ids = torch.tensor([t for t, _ in bias], dtype=torch.long)
    values = torch.tensor([b for _, b in bias], dtype=logits.dtype)
    return logits.index_add(0, ids, values)


def mask_tokens(logits: torch.Tensor, ids: Sequence[int]) -> torch.Tensor:
    """`ids` made impossible (a new tensor), unless that leaves nothing to sample (a grammar
    that must end now): then the row is left as it was."""
    out = logits.clone()
    out[torch.tensor(list(ids), dtype=torch.long)] = float("-inf")
    return out if bool(torch.isfinite(out).any()) else logits


def process_row(
    logits: torch.Tensor,
    params: SamplingParams,
    prompt_ids: Sequence[int],
    output_ids: Sequence[int],
    end_ids: Sequence[int],
) -> torch.Tensor:
    """Every processor `params` asks for, over one row (`end_ids`: the model's EOS ids)."""
    if params.penalized:
        logits = apply_penalties(
            logits,
            prompt_ids,
            output_ids,
            params.frequency_penalty,
            params.presence_penalty,
            params.repetition_penalty,
        )
    if params.logit_bias:
        logits = apply_logit_bias(logits, params.logit_bias)
    if len(output_ids) < params.min_new_tokens:
        logits = mask_tokens(logits, [*end_ids, *params.stop_token_ids])
    return logits


def token_logprobs(logits: torch.Tensor, token: int, top: int) -> TokenLogprob:
    """The log-probability of `token` under one row's logits, and the `top` most likely."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    entry = TokenLogprob(token, float(lp[token]))
    if top:
        values, ids = torch.topk(lp, top)
        entry.top = list(zip(ids.tolist(), values.tolist(), strict=True))
    return entry


# -- candidates and draws ---------------------------------------------------------------------

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


def min_p_filter(probs: torch.Tensor, min_p: float) -> torch.Tensor:
    """`probs` with every token less likely than `min_p` times the best one zeroed."""
    return torch.where(probs >= min_p * probs.max(), probs, torch.zeros_like(probs))


def sample_row(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    if params.greedy:
        return int(torch.argmax(logits))
    values, ids = candidates(logits.float() / params.temperature, params.top_k, params.top_p)
    probs = torch.softmax(values, dim=-1)
    if not bool(torch.isfinite(probs).all()):  # one odd row must not fail the whole step
        return int(ids[torch.argmax(values)])
    if params.min_p > 0:
        probs = min_p_filter(probs, params.min_p)
    # An exponential race: every vocabulary entry draws its own Exp(1), and the candidate
    # whose probability over its draw is largest wins, which happens with exactly its
    # probability. Logits that move by float rounding then change the winner only when two
    # scores come that close, or when the token top-p's edge lets in or out would have won;
    # walking a cumulative sum instead moves the draw wherever the rounding of all tokens
    # before it adds up (and over top-p's sorted candidates, two near-equal ones swapping
    # places hand a whole share of draws to the other). torch.multinomial also takes several
    # times as long over a whole vocabulary.
    race = -torch.log(torch.rand(logits.shape[-1], generator=generator)[ids])
    return int(ids[torch.argmax(probs / race)])


@dataclass
class SampleRow:
    """What the sampler needs of one request besides its logits."""

    params: SamplingParams
    prompt_ids: Sequence[int]
    output_ids: Sequence[int]  # the tokens before this row's
    seed: int  # the request's (`request_seed`)


def sample(logits: torch.Tensor, rows: list[SampleRow]) -> list[int]:
    """One token per row. Greedy rows share one argmax; sampled rows draw from the RNG of their
    request's seed and their position."""
    greedy = torch.argmax(logits, dim=-1).tolist()
    return [
        greedy[i]
        if r.params.greedy
        else sample_row(logits[i], r.params, position_generator(r.seed, len(r.output_ids)))
        for i, r in enumerate(rows)
    ]


def sample_batch(
    logits: torch.Tensor, rows: list[SampleRow], end_ids: Sequence[int]
) -> list[tuple[int, TokenLogprob | None]]:
    """Process, sample and (for rows that asked) score one token per row; `logits` is changed
    in place for the rows that have processors."""
    for i, r in enumerate(rows):
        if r.params.processed:
            logits[i] = process_row(logits[i], r.params, r.prompt_ids, r.output_ids, end_ids)
    tokens = sample(logits, rows)
    return [
        (t, token_logprobs(logits[i], t, r.params.top_logprobs) if r.params.logprobs else None)
        for i, (t, r) in enumerate(zip(tokens, rows, strict=True))
    ]
