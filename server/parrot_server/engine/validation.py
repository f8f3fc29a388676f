"""The checks a request passes before the engine queues it (typed errors, never a crash
mid-step)."""

from __future__ import annotations

from .errors import InvalidRequestError, PromptTooLongError
from .sampling_params import SamplingParams


def validate(
    prompt_ids: list[int],
    new_ids: list[int],
    sampling: SamplingParams,
    prefill_only: bool,
    *,
    vocab: int,
    window: int,
    pool: int,
) -> None:
    """`new_ids`: the ids this request adds (a context's own were checked before); `window`:
    the context window; `pool`: KV slots in the pool."""
    if not prompt_ids:
        raise InvalidRequestError("the prompt is empty")
    bad = [t for t in new_ids if not isinstance(t, int) or not 0 <= t < vocab]
    if bad:
        raise InvalidRequestError(f"token ids must be integers in [0, {vocab}); got {bad[:5]}")
    biased = [t for t, _ in sampling.logit_bias if t >= vocab]
    if biased:
        raise InvalidRequestError(f"logit_bias: token ids must be below {vocab}; got {biased[:5]}")
    room = 0 if prefill_only else 1
    if len(prompt_ids) + room > window:
        raise PromptTooLongError(
            f"prompt has {len(prompt_ids)} tokens; the context window is {window} "
            f"tokens and must leave room for at least {room} generated token(s)"
        )
    need = min(len(prompt_ids) + (0 if prefill_only else sampling.max_new_tokens), window)
    if need > pool:
        raise PromptTooLongError(
            f"prompt plus max_new_tokens needs {need} KV slots but the pool holds "
            f"{pool} (EngineConfig.kv_pool_tokens)"
        )
