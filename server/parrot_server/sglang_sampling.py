"""Our `SamplingParams` <-> SGLang's `sampling_params` (+ the logprob fields of `/generate`),
both directions in one place: what a `parrot engine` reads and what a ServeCore sends to an
engine. Torch-free."""

from __future__ import annotations

from typing import Any

from .engine.errors import InvalidRequestError
from .engine.sampling_params import SamplingParams
from .sglang_protocol import GenerateRequest, SamplingParamsModel

# Fields named and typed alike on both sides.
_SAME = (
    "max_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "sampling_seed",
    "ignore_eos",
    "skip_special_tokens",
    "json_schema",
    "regex",
    "ebnf",
)
# Logit processors: sent only when not neutral, so a worker that lacks one is not asked for it.
_PROCESSORS = (
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "min_p",
    "min_new_tokens",
)


def from_generate_request(req: GenerateRequest) -> SamplingParams:
    """SGLang's `/generate` request -> ours (a bad value raises `InvalidRequestError`)."""
    sp = req.sampling_params
    if req.return_logprob and req.logprob_start_len not in (-1, None):
        raise InvalidRequestError(
            "logprob_start_len: the embedded engine scores output tokens only (give -1)"
        )
    try:
        bias = {int(k): v for k, v in (sp.logit_bias or {}).items()}
    except ValueError:
        raise InvalidRequestError("logit_bias: keys must be token ids") from None
    return SamplingParams(
        **{name: getattr(sp, name) for name in _SAME + _PROCESSORS},
        stop=tuple([sp.stop] if isinstance(sp.stop, str) else sp.stop or ()),
        stop_token_ids=tuple(sp.stop_token_ids or ()),
        constrained_prompt_tail=sp.constrained_prompt_tail or 0,
        logit_bias=bias,
        logprobs=req.return_logprob,
        top_logprobs=req.top_logprobs_num if req.return_logprob else 0,
    )


def sampling_params_body(sp: SamplingParams) -> dict[str, Any]:
    """Ours -> SGLang's `sampling_params`. Unset fields are left out: SGLang 0.5.5 types
    `sampling_seed` as a plain int (default 42), not an optional one."""
    body = SamplingParamsModel(
        **{name: getattr(sp, name) for name in _SAME + _PROCESSORS},
        stop=list(sp.stop) or None,
        stop_token_ids=list(sp.stop_token_ids) or None,
        constrained_prompt_tail=sp.constrained_prompt_tail or None,
        logit_bias={str(t): b for t, b in sp.logit_bias} or None,
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
