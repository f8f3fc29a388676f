"""Sampling parameters, named as in SGLang's native `/generate` `sampling_params`."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field

from .errors import InvalidRequestError


class ConstraintKind(enum.Enum):
    """What a constrained request's output must follow (named as SGLang's fields)."""

    JSON_SCHEMA = "json_schema"
    REGEX = "regex"
    EBNF = "ebnf"


def choices_ebnf(choices: list[str] | tuple[str, ...]) -> str:
    """An EBNF grammar whose sentences are exactly `choices` (JSON string escapes are EBNF's)."""
    return "root ::= " + " | ".join(json.dumps(c, ensure_ascii=False) for c in choices)


# Bounds on what one request may ask for, whichever API it came through (generation itself
# stops at the context window, whatever max_new_tokens says).
MAX_NEW_TOKENS = 2**31 - 1
MAX_STOPS = 16
MAX_STOP_CHARS = 512
MAX_STOP_TOKEN_IDS = 256
GREEDY_BELOW_TEMPERATURE = 1e-5
MAX_PENALTY = 2.0  # frequency/presence: OpenAI's range is [-2, 2]
MAX_REPETITION_PENALTY = 10.0  # CTRL's: (0, 10]
MAX_LOGIT_BIAS = 100.0  # OpenAI's: [-100, 100]
MAX_LOGIT_BIAS_TOKENS = 1024
MAX_TOP_LOGPROBS = 20  # OpenAI's chat bound


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = -1  # -1: no top-k cut
    stop: tuple[str, ...] = ()  # stop strings; the matched one is not part of the output
    stop_token_ids: tuple[int, ...] = ()
    sampling_seed: int | None = None  # same seed, same prompt => same output
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    # Logit processors (sampler.py); each neutral value leaves the row untouched. Penalties as
    # OpenAI defines them (frequency: per occurrence in the output so far; presence: once per
    # token in the output), repetition as CTRL (over prompt and output; > 1 discourages).
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    min_p: float = 0.0  # drop tokens less likely than min_p times the most likely one
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, added to its logit); a dict too
    min_new_tokens: int = 0  # EOS and stop_token_ids are masked until this many are out
    # Log-probabilities of each sampled token (and of the `top_logprobs` best), from the
    # processed logits before temperature (sampler.py `token_logprobs`).
    logprobs: bool = False
    top_logprobs: int = 0
    # At most one constraint on the output (grammar.py): a JSON schema (as JSON text, or a dict),
    # a regular expression, or an EBNF grammar whose start rule is `root`.
    json_schema: str | None = None
    regex: str | None = None
    ebnf: str | None = None
    # The last this-many prompt tokens were already generated under the constraint (a request
    # resumed on another engine): the grammar starts after them.
    constrained_prompt_tail: int = 0
    extra: dict = field(default_factory=dict, compare=False)  # unknown fields, kept for echoing

    def __post_init__(self) -> None:
        # Normalise lists (JSON) and a single stop string to tuples.
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop or ()))
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids or ()))
        bias = self.logit_bias
        if isinstance(bias, dict):
            bias = bias.items()
        object.__setattr__(self, "logit_bias", tuple(tuple(kv) for kv in bias or ()))
        if isinstance(self.json_schema, (dict, bool)):
            object.__setattr__(self, "json_schema", json.dumps(self.json_schema))
        self.validate()

    def validate(self) -> None:
        def bad(msg: str) -> InvalidRequestError:
            return InvalidRequestError(f"invalid sampling params: {msg}")

        n = self.max_new_tokens
        if not isinstance(n, int) or not 1 <= n <= MAX_NEW_TOKENS:
            raise bad(f"max_new_tokens must be an integer in [1, {MAX_NEW_TOKENS}], got {n!r}")
        if not self.temperature >= 0:  # also catches NaN
            raise bad(f"temperature must be >= 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise bad(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or (self.top_k < 1 and self.top_k != -1):
            raise bad(f"top_k must be -1 (off) or >= 1, got {self.top_k!r}")
        if len(self.stop) > MAX_STOPS:
            raise bad(f"at most {MAX_STOPS} stop strings, got {len(self.stop)}")
        if any(not isinstance(s, str) or not 0 < len(s) <= MAX_STOP_CHARS for s in self.stop):
            raise bad(f"stop strings must be non-empty strings of at most {MAX_STOP_CHARS} chars")
        if len(self.stop_token_ids) > MAX_STOP_TOKEN_IDS:
            raise bad(
                f"at most {MAX_STOP_TOKEN_IDS} stop_token_ids, got {len(self.stop_token_ids)}"
            )
        if any(not isinstance(t, int) or t < 0 for t in self.stop_token_ids):
            raise bad("stop_token_ids must be non-negative integers")
        for name in ("frequency_penalty", "presence_penalty"):
            v = getattr(self, name)
            if not -MAX_PENALTY <= v <= MAX_PENALTY:
                raise bad(f"{name} must be in [-{MAX_PENALTY}, {MAX_PENALTY}], got {v!r}")
        if not 0 < self.repetition_penalty <= MAX_REPETITION_PENALTY:
            raise bad(
                f"repetition_penalty must be in (0, {MAX_REPETITION_PENALTY}], "
                f"got {self.repetition_penalty!r}"
            )
        if not 0 <= self.min_p <= 1:
            raise bad(f"min_p must be in [0, 1], got {self.min_p!r}")
        if len(self.logit_bias) > MAX_LOGIT_BIAS_TOKENS:
            raise bad(f"logit_bias holds at most {MAX_LOGIT_BIAS_TOKENS} tokens")
        for pair in self.logit_bias:
            tok, b = pair if len(pair) == 2 else (None, None)
            if not isinstance(tok, int) or tok < 0:
                raise bad(f"logit_bias keys must be token ids (integers >= 0), got {tok!r}")
            if not isinstance(b, (int, float)) or not -MAX_LOGIT_BIAS <= b <= MAX_LOGIT_BIAS:
                raise bad(f"logit_bias values must be in [-100, 100], got {b!r} for token {tok}")
        m = self.min_new_tokens
        if not isinstance(m, int) or not 0 <= m <= self.max_new_tokens:
            raise bad(f"min_new_tokens must be an integer in [0, max_new_tokens], got {m!r}")
        k = self.top_logprobs
        if not isinstance(k, int) or not 0 <= k <= MAX_TOP_LOGPROBS:
            raise bad(f"top_logprobs must be an integer in [0, {MAX_TOP_LOGPROBS}], got {k!r}")
        given = [k for k in ConstraintKind if getattr(self, k.value) is not None]
        if len(given) > 1:
            raise bad(f"give at most one of json_schema, regex and ebnf; got {len(given)}")
        if any(not isinstance(getattr(self, k.value), str) for k in given):
            raise bad(f"{given[0].value} must be a string")
        tail = self.constrained_prompt_tail
        if not isinstance(tail, int) or tail < 0 or (tail and not given):
            raise bad("constrained_prompt_tail must be an integer >= 0, and 0 without a constraint")
        seed = self.sampling_seed
        # torch.Generator.manual_seed takes [-2**63, 2**64); checked here, not in a step where a
        # failure would abort every request of the batch.
        if seed is not None and (not isinstance(seed, int) or not -(2**63) <= seed < 2**63):
            raise bad(f"sampling_seed must be an integer in [-2**63, 2**63), got {seed!r}")

    @property
    def greedy(self) -> bool:
        # A temperature this small is greedy in all but name, and dividing logits by it
        # overflows to inf (then NaN probabilities), as SGLang also reasons.
        return self.temperature < GREEDY_BELOW_TEMPERATURE or self.top_k == 1

    @property
    def penalized(self) -> bool:
        """Whether any penalty applies (they need the request's tokens so far)."""
        return bool(
            self.frequency_penalty or self.presence_penalty or self.repetition_penalty != 1.0
        )

    @property
    def processed(self) -> bool:
        """Whether the logits are changed before sampling (rows without skip that work)."""
        return self.penalized or bool(self.logit_bias) or self.min_new_tokens > 0

    @property
    def constraint(self) -> tuple[ConstraintKind, str] | None:
        for kind in ConstraintKind:
            text = getattr(self, kind.value)
            if text is not None:
                return kind, text
        return None
