"""Runs one scheduled batch through the model: paged KV pool, attention, sampling.

All query tokens of a step are flattened into one sequence so that every projection and MLP
is one GEMM over the whole batch. Attention then works per request against the KV pool:
single-token chunks (decodes) as one padded batch, longer chunks (prefill) one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .model import LlamaModel
from .sampler import make_generator, sample
from .scheduler import Chunk


class KVPool:
    """K and V for every slot of every layer: [layers, slots, kv_heads, head_dim] each."""

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

    @property
    def bytes_per_token(self) -> int:
        return 2 * self.k[:, 0].numel() * self.k.element_size()


@dataclass
class _Prefill:
    rows: slice  # this chunk's query rows in the flat batch
    kv_slots: torch.Tensor  # [L] slots of the request's history including the chunk
    causal_mask: torch.Tensor | None  # [n, L] bool, None when the chunk is the whole history


class PagedAttention:
    """AttentionFn over the KV pool for one step's flattened batch."""

    def __init__(self, pool: KVPool, chunks: list[Chunk], device: torch.device) -> None:
        self.pool = pool
        write: list[int] = []
        for c in chunks:
            write.extend(c.request.slots[c.start : c.start + c.length])
        self.write_slots = torch.tensor(write, dtype=torch.long, device=device)

        decodes = [c for c in chunks if c.length == 1]  # chunks come decode-first
        self.num_decode = len(decodes)
        if decodes:
            lengths = [c.start + 1 for c in decodes]
            longest = max(lengths)
            index = torch.zeros(len(decodes), longest, dtype=torch.long)
            for i, c in enumerate(decodes):
                index[i, : lengths[i]] = torch.tensor(c.request.slots[: lengths[i]])
            self.decode_index_shape = tuple(index.shape)
            self.decode_index = index.flatten().to(device)
            pos = torch.arange(longest)
            self.decode_mask = (pos[None, :] < torch.tensor(lengths)[:, None]).to(device)[
                :, None, None, :
            ]

        self.prefills: list[_Prefill] = []
        row = self.num_decode
        for c in chunks[self.num_decode :]:
            total = c.start + c.length
            mask = None
            if c.start:
                q_pos = torch.arange(c.start, total)[:, None]
                mask = (torch.arange(total)[None, :] <= q_pos).to(device)
            slots = torch.tensor(c.request.slots[:total], dtype=torch.long, device=device)
            self.prefills.append(_Prefill(slice(row, row + c.length), slots, mask))
            row += c.length

    def __call__(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        k_pool, v_pool = self.pool.k[layer], self.pool.v[layer]
        k_pool.index_copy_(0, self.write_slots, k)
        v_pool.index_copy_(0, self.write_slots, v)
        out = torch.empty_like(q)
        if self.num_decode:
            # index_select on a flat index is several times faster than advanced indexing.
            shape = (*self.decode_index_shape, *k_pool.shape[1:])
            kd = (
                k_pool.index_select(0, self.decode_index).view(shape).transpose(1, 2)
            )  # [B, Hkv, L, D]
            vd = v_pool.index_select(0, self.decode_index).view(shape).transpose(1, 2)
            qd = q[: self.num_decode].unsqueeze(2)  # [B, Hq, 1, D]
            o = F.scaled_dot_product_attention(
                qd, kd, vd, attn_mask=self.decode_mask, enable_gqa=True
            )
            out[: self.num_decode] = o.squeeze(2)
        for p in self.prefills:
            qp = q[p.rows].transpose(0, 1).unsqueeze(0)  # [1, Hq, n, D]
            kp = k_pool.index_select(0, p.kv_slots).transpose(0, 1).unsqueeze(0)  # [1, Hkv, L, D]
            vp = v_pool.index_select(0, p.kv_slots).transpose(0, 1).unsqueeze(0)
            o = F.scaled_dot_product_attention(
                qp,
                kp,
                vp,
                attn_mask=p.causal_mask,
                is_causal=p.causal_mask is None,
                enable_gqa=True,
            )
            out[p.rows] = o.squeeze(0).transpose(0, 1)
        return out


class ModelRunner:
    def __init__(self, model: LlamaModel, num_slots: int) -> None:
        self.model = model
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        cfg = model.config
        self.pool = KVPool(
            cfg.num_layers, num_slots, cfg.num_kv_heads, cfg.head_dim, self.dtype, self.device
        )

    @torch.inference_mode()
    def run(self, chunks: list[Chunk]) -> list[int | None]:
        """Compute the chunks; returns the sampled token of each chunk (None if not sampled)."""
        order = sorted(range(len(chunks)), key=lambda i: chunks[i].length != 1)
        ordered = [chunks[i] for i in order]
        ids: list[int] = []
        positions: list[int] = []
        for c in ordered:
            ids.extend(c.request.tokens[c.start : c.start + c.length])
            positions.extend(range(c.start, c.start + c.length))
        attention = PagedAttention(self.pool, ordered, self.device)
        hidden = self.model(
            torch.tensor(ids, dtype=torch.long, device=self.device),
            torch.tensor(positions, dtype=torch.long, device=self.device),
            attention,
        )
        # Only the last row of a sampling chunk needs logits (the LM head is the largest GEMM).
        ends, sampled = [], []
        row = 0
        for c in ordered:
            row += c.length
            if c.sample:
                ends.append(row - 1)
                sampled.append(c)
        result: dict[int, int] = {}
        if sampled:
            logits = self.model.compute_logits(hidden[torch.tensor(ends, device=self.device)])
            gens = [
                c.request.state.setdefault("rng", make_generator(c.request.sampling))
                for c in sampled
            ]
            tokens = sample(logits.float().cpu(), [c.request.sampling for c in sampled], gens)
            result = {id(c): t for c, t in zip(sampled, tokens, strict=True)}
        return [result.get(id(c)) for c in chunks]
