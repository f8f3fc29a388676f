"""Free-list of KV pool slots. One slot holds the K and V of one token in every layer.

Pure Python on purpose: the scheduler decides who gets slots without touching torch; the model
runner owns the tensors the slot numbers index.
"""

from __future__ import annotations


class KVSlotAllocator:
    def __init__(self, num_slots: int) -> None:
        if num_slots <= 0:
            raise ValueError(f"KV pool needs at least one slot, got {num_slots}")
        self.num_slots = num_slots
        # Pop from the end: slots come out in ascending order, which keeps a fresh request's
        # KV contiguous in memory (cheaper gathers).
        self._free: list[int] = list(range(num_slots - 1, -1, -1))

    @property
    def num_free(self) -> int:
        return len(self._free)

    def allocate(self, n: int) -> list[int] | None:
        """n slots, or None (nothing taken) when fewer than n are free."""
        if n > len(self._free):
            return None
        if n == 0:
            return []
        taken = self._free[-n:]
        del self._free[-n:]
        taken.reverse()
        return taken

    def free(self, slots: list[int]) -> None:
        self._free.extend(reversed(slots))
