"""Which prompt prefixes one engine has been sent recently: the ServeCore's approximation of
that engine's radix cache, used to place requests where their prefix is already cached.

Prompts are cut into full blocks of `block_tokens` token ids; block k is keyed by a hash chained
over blocks 0..k (as vLLM's prefix caching does), so a key stands for the whole prefix up to
the end of its block, and matching walks the chain until the first key that is absent. A
partial last block is never indexed: the engine reuses it, but the saving is small and the key
would pin a prefix no other prompt is likely to extend exactly.

Eviction is LRU over blocks, bounded by `capacity_tokens` (the engine's KV pool). A chain is
always touched leaf first, root last, so a parent is never older than its children and eviction
drops leaves before the blocks they hang on (no unreachable orphans are kept). It is an
approximation: the engine evicts on its own schedule and never tells us; a false hit only costs
a placement that is slightly worse than it could have been.

Pure Python, no I/O; a 4K-token prompt is 256 tuple hashes, tens of microseconds.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

_ROOT = 0x5EED  # the chain's seed: the "parent" of block 0


class PrefixIndex:
    """Chained block hashes of the prompts sent to one engine, with LRU eviction.

    `match(ids)` is how many leading tokens (a multiple of `block_tokens`) are present;
    `insert(ids)` records a prompt; both mark the matched blocks as recently used.
    """

    def __init__(self, capacity_tokens: int, block_tokens: int = 16) -> None:
        if block_tokens < 1:
            raise ValueError(f"block_tokens must be >= 1, got {block_tokens}")
        if capacity_tokens < 0:
            raise ValueError(f"capacity_tokens must be >= 0, got {capacity_tokens}")
        self.capacity_tokens = capacity_tokens
        self.block_tokens = block_tokens
        self.capacity_blocks = max(1, capacity_tokens // block_tokens)
        self._blocks: OrderedDict[int, None] = OrderedDict()  # chained hash, oldest first

    def hashes(self, ids: Sequence[int], namespace: str | None = None) -> list[int]:
        """The chained key of every full block of `ids` in the engine's cache `namespace`, in
        order (pure: touches nothing). Namespaces never share a block, as in the engine."""
        bt = self.block_tokens
        out: list[int] = []
        h = _ROOT if namespace is None else hash((_ROOT, namespace))
        for start in range(0, len(ids) - bt + 1, bt):
            h = hash((h, tuple(ids[start : start + bt])))
            out.append(h)
        return out

    def __contains__(self, block_hash: object) -> bool:
        return block_hash in self._blocks

    def match_hashes(self, hashes: Sequence[int], *, touch: bool = True) -> int:
        """How many leading keys of `hashes` are held (blocks, not tokens)."""
        n = 0
        for h in hashes:
            if h not in self._blocks:
                break
            n += 1
        if touch:
            self._touch(hashes[:n])
        return n

    def match(self, ids: Sequence[int], namespace: str | None = None, *, touch: bool = True) -> int:
        """Number of leading tokens of `ids` (a multiple of `block_tokens`) whose blocks are all
        held. `touch=False` only looks (a scheduler scoring engines it may not pick)."""
        return self.match_hashes(self.hashes(ids, namespace), touch=touch) * self.block_tokens

    def insert(self, ids: Sequence[int], namespace: str | None = None) -> None:
        """Record that `ids` was sent: its full blocks become the most recently used."""
        hashes = self.hashes(ids, namespace)
        self._touch(hashes)
        while len(self._blocks) > self.capacity_blocks:
            self._blocks.popitem(last=False)  # oldest: a leaf, given the touch order

    def _touch(self, hashes: Sequence[int]) -> None:
        blocks = self._blocks
        for h in reversed(hashes):  # leaf first, root last: the root ends up newest
            blocks[h] = None
            blocks.move_to_end(h)

    def clear(self) -> None:
        """Forget everything (the engine restarted with an empty cache)."""
        self._blocks.clear()

    def __len__(self) -> int:
        return len(self._blocks)

    @property
    def tokens(self) -> int:
        """Tokens worth of blocks held."""
        return len(self._blocks) * self.block_tokens

    def __repr__(self) -> str:
        return (
            f"PrefixIndex({len(self._blocks)}/{self.capacity_blocks} blocks"
            f" of {self.block_tokens} tokens)"
        )
