"""What one engine step computes: a `Batch` of `Chunk`s, each some tokens of one request (a
prompt chunk, a decode, or a decode with a draft to verify). Made by the scheduler, run by
`StepRun`, committed by both. No torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from .request import Request


@dataclass
class Chunk:
    """Compute `tokens[start:start+length]` of `request`; sample after it if `sample`. With a
    `draft`, the chunk is the request's last token then the draft's tokens (`length` counts
    both), every row sampled to verify the draft."""

    request: Request
    start: int
    length: int
    sample: bool
    # (prefix id, length) of the deepest cached prefix this chunk shares with another chunk of
    # its kind (decode or prefill) in the batch: the shared-prefix kernel reads it once for all.
    shared_prefix: tuple[int, int] | None = None
    draft: tuple[int, ...] = ()
    accepted: int = 0  # draft tokens the model agreed with (set once the step is sampled)

    @property
    def token_ids(self) -> list[int]:
        known = self.request.tokens[self.start : self.start + self.length - len(self.draft)]
        return known + list(self.draft)

    @property
    def decoding(self) -> bool:
        """One new token (and a draft, if any): its rows attend as decodes."""
        return self.length == 1 or bool(self.draft)

    @property
    def computed(self) -> int:
        """Tokens whose KV holds once the step ran: a draft's only up to its first miss."""
        return 1 + self.accepted if self.draft else self.length


@dataclass
class Batch:
    chunks: list[Chunk] = field(default_factory=list)
    completed: list[Request] = field(default_factory=list)  # fills whose prompt was all cached
    # Lower-priority work's turn while more urgent work runs (after `background_pause_steps`
    # steps): the engine runs a slice of it and sets the rest aside.
    turn: bool = False

    @property
    def num_tokens(self) -> int:
        return sum(c.length for c in self.chunks)
