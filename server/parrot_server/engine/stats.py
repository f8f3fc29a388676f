"""What the engine reports about itself (`Engine.stats`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EngineStats:
    kv_pool_tokens: int
    kv_used_tokens: int  # held by requests or by the cache
    kv_free_tokens: int  # free now, plus what eviction could free
    cached_tokens: int  # in the prefix cache
    waiting_requests: int
    running_requests: int
    contexts: int
    prompt_tokens_total: int
    cached_prompt_tokens_total: int  # prompt tokens served from the prefix cache
    generated_tokens_total: int
    preemptions_total: int
    shared_prefix_queries_total: int  # query tokens that read a shared prefix once per group
    steps_total: int
    steps_set_aside_total: int  # stopped between layers for more urgent work, finished later
    draft_tokens_total: int  # guessed from the request's text and verified (draft.py)
    accepted_draft_tokens_total: int  # of those, what the model agreed with
    busy_seconds_total: float  # time spent in steps (for throughput)

    @property
    def cache_hit_rate(self) -> float:
        return self.cached_prompt_tokens_total / max(1, self.prompt_tokens_total)
