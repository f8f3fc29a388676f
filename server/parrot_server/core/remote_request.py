"""Our sampling parameters as the fields of SGLang's `/generate` body (torch-free)."""

from __future__ import annotations

from typing import Any

from ..engine.sampling_params import SamplingParams
from ..sglang_protocol import SamplingParamsModel

# Sent only when not neutral: a worker that lacks one is not asked for it.
_PROCESSORS = (
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "min_p",
    "min_new_tokens",
)


def sampling_params_body(sp: SamplingParams) -> dict[str, Any]:
    """Ours -> SGLang's `sampling_params`. Unset fields are left out: SGLang 0.5.5 types
    `sampling_seed` as a plain int (default 42), not an optional one."""
    body = SamplingParamsModel(
        max_new_tokens=sp.max_new_tokens,
        temperature=sp.temperature,
        top_p=sp.top_p,
        top_k=sp.top_k,
        stop=list(sp.stop) or None,
        stop_token_ids=list(sp.stop_token_ids) or None,
        sampling_seed=sp.sampling_seed,
        ignore_eos=sp.ignore_eos,
        skip_special_tokens=sp.skip_special_tokens,
        json_schema=sp.json_schema,
        regex=sp.regex,
        ebnf=sp.ebnf,
        constrained_prompt_tail=sp.constrained_prompt_tail or None,
        logit_bias={str(t): b for t, b in sp.logit_bias} or None,
        **{name: getattr(sp, name) for name in _PROCESSORS},
    )
    neutral = {
        n for n in _PROCESSORS if getattr(body, n) == SamplingParamsModel.model_fields[n].default
    }
    return body.model_dump(exclude_none=True, exclude=neutral)


def logprob_fields(sp: SamplingParams) -> dict[str, Any]:
    """The `/generate` fields asking for the output tokens' logprobs, when `sp` wants them."""
    if not sp.logprobs:
        return {}
    return {"return_logprob": True, "top_logprobs_num": sp.top_logprobs}
