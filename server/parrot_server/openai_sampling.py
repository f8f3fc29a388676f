"""A `/v1` request's sampling fields -> the engine's `SamplingParams`, one choice at a time."""

from __future__ import annotations

from parrot_integrations.protocol.openai import SamplingRequest

from .core.penalty_fields import penalty_fields
from .engine.sampling_params import SamplingParams


def to_sampling_params(
    req: SamplingRequest, max_new_tokens: int, grammar: str | None = None, choice: int = 0
) -> SamplingParams:
    """OpenAI's sampling fields as the engine's; invalid values raise `InvalidRequestError`.
    `grammar`: the EBNF grammar the output follows (tools offered), else `response_format`'s
    schema applies. `choice`: which of the `n` choices (each has its own seed)."""
    top_k = req.top_k if req.top_k is not None else -1
    top_p = 1.0 if req.top_p is None else req.top_p
    if top_p == 0:  # OpenAI accepts 0: only the most likely token survives the cut
        top_p, top_k = 1.0, 1
    top_logprobs = req.top_logprobs_wanted
    return SamplingParams(
        max_new_tokens=max_new_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=top_p,
        top_k=top_k,
        stop=tuple(req.stop_list),
        stop_token_ids=tuple(req.stop_token_ids or ()),
        sampling_seed=req.choice_seed(choice),
        ignore_eos=req.ignore_eos,
        skip_special_tokens=req.skip_special_tokens,
        # A limit below min_tokens is the context window's: the window wins.
        min_new_tokens=min(req.min_tokens or 0, max_new_tokens),
        logprobs=top_logprobs is not None,
        top_logprobs=top_logprobs or 0,
        json_schema=None if grammar or not req.response_format else req.response_format.schema_text,
        ebnf=grammar,
        **penalty_fields(req),
    )
