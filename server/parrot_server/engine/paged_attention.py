"""`PagedAttention`: attention over the KV pool for one step's flattened batch.

Single-token chunks (decodes, each row of a decode with a draft too) attend as one padded batch (or through the compiled paged decode
kernel), decodes and prefill chunks sharing a cached prefix read it once per group through the
shared-prefix kernels, other prefill chunks attend one by one (through the compiled prefill
kernel where it applies).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from types import ModuleType

import torch
import torch.nn.functional as F

from parrot_kernels import plan_shared_prefix
from parrot_kernels import shared_prefix as torch_shared_prefix
from parrot_kernels.decode_layer import DecodeKV
from parrot_kernels.paged_attention import paged_decode_attention
from parrot_kernels.prefill_attention import prefill_attention

from .batch import Chunk
from .kv_pool import KVPool


def _slot_source(slots: list[int], device: torch.device) -> slice | torch.Tensor:
    """Slots to read from the pool: a slice when they are one ascending run (the allocator hands
    a fresh request's slots out that way), read as a view with no copy; else an index tensor."""
    run = slots and slots[-1] - slots[0] == len(slots) - 1
    if run and all(b == a + 1 for a, b in zip(slots, slots[1:], strict=False)):
        return slice(slots[0], slots[-1] + 1)
    return torch.tensor(slots, dtype=torch.long, device=device)


def _read(pool: torch.Tensor, source: slice | torch.Tensor) -> torch.Tensor:
    """One layer's pool rows at source ([slots, Hkv, D]): a view for a slice, else a gather."""
    if isinstance(source, slice):
        return pool[source]
    return pool.index_select(0, source)


def _padded_index(
    histories: list[list[int]], device: torch.device
) -> tuple[torch.Tensor, tuple[int, int], list[int]]:
    """Slot lists -> (flat zero-padded index for index_select, (B, L), lengths)."""
    lengths = [len(h) for h in histories]
    index = torch.zeros(len(histories), max(lengths), dtype=torch.long)
    for i, h in enumerate(histories):
        index[i, : len(h)] = torch.tensor(h, dtype=torch.long)
    return index.flatten().to(device), tuple(index.shape), lengths


@dataclass
class _Decodes:
    """Single-token chunks attended as one padded batch (each request reads its whole KV)."""

    rows: slice | torch.Tensor  # rows of these queries in the flat batch (a slice: in order)
    index: torch.Tensor  # flat padded slot index
    shape: tuple[int, int]  # (B, L)
    lengths: torch.Tensor  # [B]: slots of each row of index.view(shape)
    mask: torch.Tensor  # [B, 1, 1, L] bool, True = visible
    # One request whose slots are one run: the torch path reads them as a view (no gather, no
    # mask). None otherwise.
    run: slice | None


@dataclass
class _SharedDecodes:
    """Single-token chunks sharing one cached prefix: the prefix is read once for the group."""

    rows: torch.Tensor
    prefix_slots: slice | torch.Tensor  # P slots, see _slot_source
    suffix_index: torch.Tensor  # flat padded slots after the prefix, the new token included
    suffix_shape: tuple[int, int]
    suffix_lens: torch.Tensor | None  # [B]; None when all are suffix_shape[1] (no mask needed)


@dataclass
class _SharedPrefills:
    """Prefill chunks sharing one cached prefix (e.g. the maps of a map-reduce over a document)."""

    rows: list[slice]
    prefix_slots: slice | torch.Tensor  # P slots, see _slot_source
    suffix_slots: list[slice | torch.Tensor]  # per chunk: slots after the prefix, chunk included


@dataclass
class _Prefill:
    rows: slice  # this chunk's query rows in the flat batch
    kv_slots: slice | torch.Tensor  # L slots of the history including the chunk
    causal_mask: torch.Tensor | None  # [n, L] bool, None when the chunk is the whole history


class PagedAttention:
    """AttentionFn over the KV pool for one step's flattened batch (decode chunks first)."""

    def __init__(
        self,
        pool: KVPool,
        chunks: list[Chunk],
        device: torch.device,
        min_shared_prefix: int = 0,
        share_prefill: bool = False,
        kernels: ModuleType = torch_shared_prefix,
    ) -> None:
        self.pool = pool
        self.kernels = kernels  # shared-prefix backend, see shared_prefix_kernels
        write: list[int] = []
        for c in chunks:
            write.extend(c.request.slots[c.start : c.start + c.length])
        self.write_slots = torch.tensor(write, dtype=torch.long, device=device)

        # A decode with a draft is several rows, row i seeing the history up to its own token.
        decodes = [c for c in chunks if c.decoding]
        num_decode = len(decodes)
        first_row = list(itertools.accumulate((c.length for c in decodes), initial=0))
        self.shared: list[_SharedDecodes] = []
        singles = list(range(num_decode))
        if min_shared_prefix and num_decode > 1:
            # The scheduler marked each plain decode's deepest prefix shared within this batch.
            refs = [c.shared_prefix for c in decodes]
            plan = plan_shared_prefix(refs, min_prefix_len=min_shared_prefix)
            singles = list(plan.singles)
            for g in plan.groups:
                reqs = [decodes[i].request for i in g.members]
                index, shape, lens = _padded_index(
                    [r.slots[g.prefix_len : r.num_computed + 1] for r in reqs], device
                )
                self.shared.append(
                    _SharedDecodes(
                        torch.tensor([first_row[i] for i in g.members], device=device),
                        _slot_source(reqs[0].slots[: g.prefix_len], device),
                        index,
                        shape,
                        None if min(lens) == shape[1] else torch.tensor(lens, device=device),
                    )
                )
        self.decodes: _Decodes | None = None
        if singles:
            rows = [first_row[i] + j for i in singles for j in range(decodes[i].length)]
            histories = [
                decodes[i].request.slots[: decodes[i].start + j + 1]
                for i in singles
                for j in range(decodes[i].length)
            ]
            source = _slot_source(histories[0], device) if len(histories) == 1 else None
            index, shape, lens = _padded_index(histories, device)
            lengths = torch.tensor(lens)
            mask = torch.arange(shape[1])[None, :] < lengths[:, None]
            in_order = rows == list(range(len(rows)))
            self.decodes = _Decodes(
                slice(0, len(rows)) if in_order else torch.tensor(rows, device=device),
                index,
                shape,
                lengths.to(device),
                mask.to(device)[:, None, None, :],
                source if isinstance(source, slice) else None,
            )

        prefills = chunks[num_decode:]
        starts = [first_row[-1] + sum(c.length for c in prefills[:i]) for i in range(len(prefills))]
        self.shared_prefills: list[_SharedPrefills] = []
        alone = list(range(len(prefills)))
        if min_shared_prefix and share_prefill and len(prefills) > 1:
            plan = plan_shared_prefix(
                [c.shared_prefix for c in prefills], min_prefix_len=min_shared_prefix
            )
            alone = list(plan.singles)
            for g in plan.groups:
                members = [prefills[i] for i in g.members]
                self.shared_prefills.append(
                    _SharedPrefills(
                        [slice(starts[i], starts[i] + prefills[i].length) for i in g.members],
                        _slot_source(members[0].request.slots[: g.prefix_len], device),
                        [
                            _slot_source(c.request.slots[g.prefix_len : c.start + c.length], device)
                            for c in members
                        ],
                    )
                )
        self.prefills: list[_Prefill] = []
        for i in alone:
            c, row = prefills[i], starts[i]
            total = c.start + c.length
            mask = None
            if c.start:
                q_pos = torch.arange(c.start, total)[:, None]
                mask = (torch.arange(total)[None, :] <= q_pos).to(device)
            slots = _slot_source(c.request.slots[:total], device)
            self.prefills.append(_Prefill(slice(row, row + c.length), slots, mask))

    @property
    def num_shared_queries(self) -> int:
        """Query tokens that read their prefix through the shared-prefix kernel this step."""
        return sum(len(g.rows) for g in self.shared) + sum(
            r.stop - r.start for g in self.shared_prefills for r in g.rows
        )

    def decode_kv(self, layer: int | None) -> DecodeKV | None:
        """The pools and slots of a step of plain decodes only (see AttentionFn)."""
        d = self.decodes
        if d is None or self.shared or self.shared_prefills or self.prefills:
            return None
        if not isinstance(d.rows, slice):
            return None
        index = d.index.view(d.shape)
        k, v = (p if layer is None else p[layer : layer + 1] for p in (self.pool.k, self.pool.v))
        return DecodeKV(k, v, self.write_slots, index, d.lengths)

    def _torch_decodes(self, layer: int, q: torch.Tensor, d: _Decodes) -> torch.Tensor:
        """Plain decodes without the compiled kernel: q [B, Hq, D] -> [B, Hq, D]."""
        if d.run is not None:  # one request, one run of slots: a view, nothing to mask
            k, v = (
                _read(pool[layer], d.run).transpose(0, 1).unsqueeze(0)
                for pool in (self.pool.k, self.pool.v)
            )
            return F.scaled_dot_product_attention(
                q.transpose(0, 1).unsqueeze(0), k, v, enable_gqa=True
            )[0].transpose(0, 1)
        # index_select on a flat index: advanced indexing takes a slower, general path.
        heads = self.pool.k.shape[2:]
        kd, vd = (  # [B, Hkv, L, D] each
            x.view(*d.shape, *heads).transpose(1, 2) for x in self.pool.gather(layer, d.index)
        )
        return F.scaled_dot_product_attention(
            q.unsqueeze(2), kd, vd, attn_mask=d.mask, enable_gqa=True
        ).squeeze(2)

    def __call__(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        k_pool, v_pool = self.pool.k[layer], self.pool.v[layer]
        k_pool.index_copy_(0, self.write_slots, k)
        v_pool.index_copy_(0, self.write_slots, v)
        heads = k_pool.shape[1:]
        d = self.decodes
        if d is not None:
            qd = q[d.rows]
            o = paged_decode_attention(qd, k_pool, v_pool, d.index.view(d.shape), d.lengths)
            if o is None:
                o = self._torch_decodes(layer, qd, d)
            if isinstance(d.rows, slice) and d.rows.stop == len(q):
                return o  # every query of the step (rows from 0): o is the whole output
        out = torch.empty_like(q)
        if d is not None:
            if isinstance(d.rows, slice):
                out[d.rows] = o
            else:
                out.index_copy_(0, d.rows, o)
        for g in self.shared:
            o = self.kernels.shared_prefix_decode(
                q[g.rows],
                _read(k_pool, g.prefix_slots),
                _read(v_pool, g.prefix_slots),
                k_pool.index_select(0, g.suffix_index).view(*g.suffix_shape, *heads),
                v_pool.index_select(0, g.suffix_index).view(*g.suffix_shape, *heads),
                g.suffix_lens,
            )
            out.index_copy_(0, g.rows, o)
        for g in self.shared_prefills:
            outs = self.kernels.shared_prefix_prefill(
                [q[r] for r in g.rows],
                _read(k_pool, g.prefix_slots),
                _read(v_pool, g.prefix_slots),
                [_read(k_pool, s) for s in g.suffix_slots],
                [_read(v_pool, s) for s in g.suffix_slots],
            )
            for r, o in zip(g.rows, outs, strict=True):
                out[r] = o
        for p in self.prefills:
            out[p.rows] = self._prefill(p, q[p.rows], k_pool, v_pool)
        return out

    @staticmethod
    def _prefill(
        p: _Prefill, q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor
    ) -> torch.Tensor:
        """One chunk's causal attention over its history: q [n, Hq, D] -> [n, Hq, D]."""
        k, v = _read(k_pool, p.kv_slots), _read(v_pool, p.kv_slots)  # [L, Hkv, D]
        o = prefill_attention(q, k, v)
        if o is not None:
            return o
        o = F.scaled_dot_product_attention(
            q.transpose(0, 1).unsqueeze(0),  # [1, Hq, n, D]
            k.transpose(0, 1).unsqueeze(0),  # [1, Hkv, L, D]
            v.transpose(0, 1).unsqueeze(0),
            attn_mask=p.causal_mask,
            is_causal=p.causal_mask is None,
            enable_gqa=True,
        )
        return o.squeeze(0).transpose(0, 1)
