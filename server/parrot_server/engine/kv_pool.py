"""The paged KV pool: K and V of every slot of every layer, and gathers from it."""

from __future__ import annotations

import torch


class KVPool:
    """K and V for every slot of every layer: [layers, slots, kv_heads, head_dim] each."""

    # Largest K+V gather kept in a reused buffer (see gather); larger ones are allocated per call.
    SCRATCH_MAX_BYTES = 256 << 20

    def __init__(
        self,
        num_layers: int,
        num_slots: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        shape = (num_layers, num_slots, num_kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self._scratch: torch.Tensor | None = None  # [2, rows, kv_heads, head_dim]

    def gather(self, layer: int, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V of one layer at the slots in index, [len(index), kv_heads, head_dim] each.

        Written into one buffer reused across layers and steps, so the result is only valid
        until the next call. A decode batch's gather is large (every slot of every request):
        allocated afresh each time, it would page-fault its way in on every layer.
        """
        n, row = index.numel(), self.k.shape[2:]
        max_rows = self.SCRATCH_MAX_BYTES // (2 * row.numel() * self.k.element_size())
        if n > max_rows:
            return self.k[layer].index_select(0, index), self.v[layer].index_select(0, index)
        cap = 0 if self._scratch is None else self._scratch.shape[1]
        if cap < n:  # grow geometrically: histories lengthen by one token per step
            self._scratch = self.k.new_empty((2, min(max(n, 2 * cap), max_rows), *row))
        k = torch.index_select(self.k[layer], 0, index, out=self._scratch[0, :n])
        v = torch.index_select(self.v[layer], 0, index, out=self._scratch[1, :n])
        return k, v

    @property
    def bytes_per_token(self) -> int:
        return 2 * self.k[:, 0].numel() * self.k.element_size()
