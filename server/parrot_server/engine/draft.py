"""Draft tokens from the request's own text (prompt lookup), for requests to verify several
tokens in one step.

Apps often make the model repeat what it was given: a rewrite, a summary quoting its source,
an answer naming the document's terms. When the last few tokens occurred before, the tokens
that followed them then are a cheap guess of what comes next. The engine runs the guesses as
extra rows of the request's decode, samples every row (row i as if the draft's first i tokens
were the request's), and keeps the rows' tokens up to the first that differs from the draft.
Greedy, that is the greedy output; sampled, a row's draw equals the draft's token with exactly
the probability the model gives it, and a draw that differs is one from the rest of the
distribution, so the output is distributed as without drafts, and a seeded request gives the
same tokens (each draw depends on its position only, `sampler.position_generator`). Both hold
up to float rounding between a one-row and a several-row step. An extra row costs a fraction
of a step on a CPU, so the draft length follows how many of the last guesses were accepted,
and a request whose guesses all fail (an answer that does not repeat its prompt) stops guessing
for a while: for one decode after the first such miss, two after the next in a row, and so on
up to `MAX_PAUSE`. No torch here: the scheduler asks for drafts.
"""

from __future__ import annotations

# Longest n-gram first: a match on three tokens predicts better than one on two.
NGRAM_SIZES = (3, 2)
MAX_PAUSE = 16  # decodes without a draft after misses in a row


class PromptLookup:
    """One request's drafter: an index of where each n-gram of its tokens last ended, updated
    as tokens are appended (a request's tokens only grow), and the draft length it earns."""

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self.length = max_tokens  # draft length for the next step
        self._pause = 0  # decodes left without a draft
        self._misses = 0  # drafts in a row of which nothing was accepted
        self._ends: dict[tuple[int, ...], int] = {}  # n-gram -> where its last occurrence ends
        self._indexed = 0  # n-grams ending before this position are in _ends

    def propose(self, tokens: list[int], limit: int) -> list[int]:
        """Up to min(`limit`, the earned length) tokens that followed the latest earlier
        occurrence of the text's last n tokens; [] when there is none."""
        self._index(tokens)
        if self._pause:
            self._pause -= 1
            return []
        k = min(limit, self.length)
        if k <= 0:
            return []
        for n in NGRAM_SIZES:
            if len(tokens) > n:
                end = self._ends.get(tuple(tokens[-n:]))
                if end is not None:
                    return tokens[end : end + k]
        return []

    def observe(self, drafted: int, accepted: int) -> None:
        """The model took `accepted` of `drafted` tokens: draft as many as were taken plus one
        next time (the full length again after a draft taken whole); after none, pause."""
        if not drafted:
            return
        self.length = self.max_tokens if accepted == drafted else accepted + 1
        self._misses = 0 if accepted else self._misses + 1
        if self._misses:
            self._pause = min(2 ** (self._misses - 1), MAX_PAUSE)

    def _index(self, tokens: list[int]) -> None:
        # Only n-grams followed by a token: the text's own last n tokens must not match
        # themselves.
        for end in range(max(self._indexed, 1), len(tokens)):
            for n in NGRAM_SIZES:
                if end >= n:
                    self._ends[tuple(tokens[end - n : end])] = end
        self._indexed = max(self._indexed, len(tokens))
