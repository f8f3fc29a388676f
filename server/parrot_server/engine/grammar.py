"""Constrained decoding: a request's output follows a JSON schema, a regex or an EBNF grammar.

xgrammar does the work: a `GrammarCompiler` per engine (one tokenizer) turns each distinct
constraint into a token-level automaton once (its own cache, capped at `CACHE_BYTES`); each
constrained request holds a matcher that, before every sampled token, marks which tokens may
come next, and advances over the token that was sampled. Unconstrained rows of a batch are left
alone. Once the grammar is complete only the model's end-of-sequence tokens remain allowed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .errors import InvalidRequestError
from .grammar_text import XGRAMMAR_ERRORS, xgrammar_message
from .sampling_params import ConstraintKind, SamplingParams

try:
    import xgrammar as xgr
except ImportError:  # an install without the server's dependencies: refused per request
    xgr = None

# Compiled grammars kept per engine (xgrammar evicts the least recently used past this).
CACHE_BYTES = 64 << 20


@dataclass(eq=False)
class GrammarState:
    """One request's position in its grammar."""

    matcher: Any  # xgrammar.GrammarMatcher
    owner: Grammars  # the engine's compiler, whose threads fill a batch's masks

    def accept(self, token: int) -> bool:
        return bool(self.matcher.accept_token(token))

    @property
    def finished(self) -> bool:
        """The grammar is complete and its end token was accepted."""
        return bool(self.matcher.is_terminated())


class Grammars:
    """Grammar compilation and matching for one tokenizer."""

    def __init__(
        self, tokenizer: Any, vocab_size: int, stop_token_ids: Sequence[int], threads: int
    ):
        if xgr is None:
            raise InvalidRequestError(
                "constrained decoding needs the xgrammar package: pip install xgrammar"
            )
        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_token_ids)
        )
        self.compiler = xgr.GrammarCompiler(
            info, max_threads=threads, cache_limit_bytes=CACHE_BYTES
        )
        self.batch = xgr.BatchGrammarMatcher(max_threads=threads)

    def start(self, sampling: SamplingParams, done: Sequence[int] = ()) -> GrammarState | None:
        """A matcher for the request's constraint (None without one), advanced over `done`,
        tokens already generated under it (a request resumed elsewhere). A constraint that does
        not compile, or `done` that it rejects, raises InvalidRequestError."""
        constraint = sampling.constraint
        if constraint is None:
            return None
        kind, text = constraint
        try:
            if kind is ConstraintKind.JSON_SCHEMA:
                grammar = self.compiler.compile_json_schema(text)
            elif kind is ConstraintKind.REGEX:
                grammar = self.compiler.compile_regex(text)
            else:
                grammar = self.compiler.compile_grammar(text)
        except XGRAMMAR_ERRORS as e:
            raise InvalidRequestError(f"invalid {kind.value}: {xgrammar_message(e)}") from None
        state = GrammarState(xgr.GrammarMatcher(grammar), self)
        for i, token in enumerate(done):
            if not state.accept(token):
                raise InvalidRequestError(
                    f"token {i} of the output so far does not follow the {kind.value}"
                )
        return state


def mask_logits(logits: torch.Tensor, states: Sequence[GrammarState | None]) -> None:
    """Sets to -inf, in place, the logits of tokens each row's grammar does not allow next
    (rows without a grammar are untouched). `logits`: [rows, vocab] on the CPU."""
    rows = [i for i, s in enumerate(states) if s is not None]
    if not rows:
        return
    vocab = logits.shape[-1]
    bitmask = xgr.allocate_token_bitmask(len(states), vocab)
    matchers = [states[i].matcher for i in rows]
    if len(rows) == 1:
        matchers[0].fill_next_token_bitmask(bitmask, rows[0])
    else:  # one engine's requests: its threads fill the rows side by side
        states[rows[0]].owner.batch.batch_fill_next_token_bitmask(matchers, bitmask, rows)
    xgr.apply_token_bitmask_inplace(logits, bitmask, vocab_size=vocab, indices=rows)
