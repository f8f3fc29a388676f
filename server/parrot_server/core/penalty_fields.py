"""Wire `Penalties` (`/v1` requests and native `SamplingOptions` alike) -> the engine's logit
processor fields of `SamplingParams`: one mapping for both APIs."""

from __future__ import annotations

from typing import Any

from parrot_integrations.protocol.penalties import Penalties


def penalty_fields(p: Penalties) -> dict[str, Any]:
    """Keyword arguments for `SamplingParams`; unset fields are the neutral values."""
    return {
        "frequency_penalty": p.frequency_penalty or 0.0,
        "presence_penalty": p.presence_penalty or 0.0,
        "repetition_penalty": 1.0 if p.repetition_penalty is None else p.repetition_penalty,
        "min_p": p.min_p or 0.0,
        "logit_bias": p.token_bias,
    }
