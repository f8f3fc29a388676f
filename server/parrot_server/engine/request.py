"""One generation request as the scheduler sees it (nano-vllm's "sequence").

Token layout: `tokens = prompt + output`. KV exists for `tokens[:num_computed]`, held in
`slots`. The first `num_cached` of those came from the prefix cache and belong to it (locked
through `cache_node`); the rest belong to the request until it finishes and hands them over.
"""

from __future__ import annotations

import enum
import itertools
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from .draft import PromptLookup
from .sampling_params import SamplingParams

_arrivals = itertools.count()


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class FinishKind(enum.Enum):
    STOP = "stop"  # eos, stop token or stop string
    LENGTH = "length"  # max_new_tokens or the context window
    ABORT = "abort"


@dataclass(frozen=True)
class FinishReason:
    kind: FinishKind
    matched: int | str | None = None  # the stop token id or stop string that ended it
    message: str | None = None  # why, for aborts

    def to_dict(self) -> dict[str, Any]:
        """SGLang's shape: {"type": "stop", "matched": 2} / {"type": "length", "length": n}."""
        d: dict[str, Any] = {"type": self.kind.value}
        if self.kind is FinishKind.STOP:
            d["matched"] = self.matched
        elif self.kind is FinishKind.LENGTH:
            d["length"] = self.matched
        else:
            d["message"] = self.message
        return d


@dataclass
class TokenLogprob:
    """A sampled token's log-probability, and the `top` most likely (id, log-probability)."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class RequestOutput:
    """What one step produced for a request: new tokens/text, and the end when it finished."""

    rid: str
    new_token_ids: list[int]
    new_text: str
    finish_reason: FinishReason | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    logprobs: list[TokenLogprob] | None = None  # one per new token, when the request asked
    # On the final output of an engine that measures it: arrival to first scheduled step.
    queued_seconds: float | None = None


@dataclass(eq=False)
class Request:
    rid: str
    prompt_ids: list[int]
    sampling: SamplingParams
    namespace: Hashable = None  # cache namespace (SGLang `extra_key`)
    priority: int = 0  # higher runs first (SGLang's default order)
    on_output: Callable[[RequestOutput], None] | None = None
    max_total_tokens: int | None = None  # context window cap on prompt + output
    prefill_only: bool = False  # a fill: compute the prompt's KV, sample nothing
    arrival: int = field(default_factory=lambda: next(_arrivals))
    arrival_time: float = field(default_factory=time.monotonic)
    queued_seconds: float | None = None  # arrival to its first scheduled step, once scheduled

    output_ids: list[int] = field(default_factory=list)
    status: RequestStatus = RequestStatus.WAITING
    slots: list[int] = field(default_factory=list)
    num_computed: int = 0
    num_cached: int = 0  # prompt tokens served from the prefix cache (first admission)
    cache_node: Any = None  # locked prefix-cache node covering slots[:num_locked]
    num_locked: int = 0
    num_preemptions: int = 0
    set_aside: bool = False  # in a step stopped between layers: its new slots are being written
    finish_reason: FinishReason | None = None
    # Per-request helpers, set by the engine and runner (typed Any: scheduling stays torch-free).
    detokenizer: Any = None  # Detokenizer: text and stop strings from the output tokens
    context: Any = None  # Context this request continues, if any
    seed: int | None = None  # of its draws (sampler.request_seed), set at its first sampled token
    grammar: Any = None  # GrammarState when the output is constrained
    lookup: PromptLookup | None = None  # its drafts, for a request that verifies them

    @property
    def tokens(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def num_pending(self) -> int:
        """Tokens still to compute before the next token can be sampled (1 when decoding)."""
        return self.num_tokens - self.num_computed

    @property
    def draft_limit(self) -> int:
        """The longest draft its decode may verify: that decode adds one token more than the
        draft, within `max_new_tokens`, and every draft token needs a position in the window."""
        left = self.sampling.max_new_tokens - len(self.output_ids) - 1
        if self.max_total_tokens is not None:
            left = min(left, self.max_total_tokens - self.num_tokens)
        return left

    @property
    def sort_key(self) -> tuple[int, int]:
        return (-self.priority, self.arrival)
