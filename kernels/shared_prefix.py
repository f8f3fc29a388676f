"""Shared-prefix attention in plain torch (the CPU path; it also runs on any torch device).

Attention of request b over concat(prefix, suffix_b) is split at the prefix boundary:

* prefix part: every query of every request, and every query head of a KV group, reads the same
  prefix keys. Stacking them gives one [B*T*G, D] @ [D, P] GEMM per KV head, so the prefix K/V is
  read once per batch instead of once per request, and the GEMM runs at matrix-matrix rather than
  matrix-vector efficiency.
* suffix part: a small padded batched attention per request, with causal masking.

On CPU each part is one call of torch's fused flash-attention op (it returns the log-sum-exp the
merge needs, and never writes the score matrix out); elsewhere, or without that op, each part
is a few plain GEMMs and elementwise ops.

The two parts are combined exactly with `merge_attention`. Internally everything is fp32;
outputs come back in the queries' dtype.

Shapes (B requests, T query tokens, Hq query heads, Hkv KV heads, D head_dim, P prefix tokens,
S padded suffix tokens; G = Hq // Hkv and query head h uses KV head h // G):
  decode q [B, Hq, D]; prefill q [B, T, Hq, D] + q_lens [B] or a list of [T_b, Hq, D]
  prefix_k, prefix_v [P, Hkv, D] (already gathered from the paged pool)
  suffix_k, suffix_v [B, S, Hkv, D] + suffix_lens [B], or lists of [S_b, Hkv, D]
The suffix of a request holds its tokens after the prefix *including* the ones being queried:
query t of request b is at suffix position suffix_lens[b] - q_lens[b] + t and sees the whole
prefix plus suffix positions up to and including its own. A query with no visible key gets 0.
"""

from __future__ import annotations

import torch

from . import gemm_attention
from .inputs import Lengths, Problem, Ragged, run_decode, run_prefill
from .merge import mix_outputs


def _fused_cpu_op():
    """torch's fused CPU flash-attention op, which also returns the log-sum-exp; None if absent.

    It is private ATen API (what SDPA calls on CPU), so its absence only costs speed: the
    plain-op path (`gemm_attention`) does the same work.
    """
    try:
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default
    except (AttributeError, RuntimeError):
        return None


_FUSED_CPU = _fused_cpu_op()


def _use_fused(q: torch.Tensor) -> bool:
    return _FUSED_CPU is not None and q.device.type == "cpu"


def _fused(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    hidden: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused attention with lse: q [N, H, L, D], k/v [N, H, S, D] (S > 0), hidden broadcastable
    to [N, H, L, S] (True = masked). Returns (o [N, H, L, D] fp32, lse [N, H, L] fp32).

    One cache-blocked kernel: the scores never make a round trip through memory, which on CPU
    is most of the plain path's cost (its max, subtract, exp and sum passes over them).
    """
    mask = None
    if hidden is not None:
        mask = torch.zeros(hidden.shape, dtype=torch.float32, device=q.device)
        mask.masked_fill_(hidden, float("-inf"))
    o, lse = _FUSED_CPU(q.float(), k.float(), v.float(), 0.0, False, attn_mask=mask, scale=scale)
    if hidden is not None:  # the op reports lse = 0 (and o = 0) for rows that see no key
        lse = lse.masked_fill(hidden.all(dim=-1).expand(lse.shape), float("-inf"))
    return o, lse


def _empty(shape: tuple[int, ...], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The empty side of a merge: o = 0, lse = -inf."""
    o = like.new_zeros(shape, dtype=torch.float32)
    return o, like.new_full(shape[:-1], float("-inf"), dtype=torch.float32)


def _prefix(
    q: torch.Tensor, pk: torch.Tensor, pv: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """q [N, Hkv, G, D] over the whole prefix [P, Hkv, D] -> (o [N, Hkv, G, D], lse [N, Hkv, G]),
    fp32 and possibly strided views (the caller's merge reads them in any layout)."""
    n, hkv, g, d = q.shape
    if pk.shape[0] == 0:
        return _empty(q.shape, q)
    if not _use_fused(q):
        return gemm_attention.prefix_gemm(q, pk, pv, scale)
    # All queries of a KV head are the rows of one problem over that head's keys: [1, Hkv, N*G,
    # D] against [1, Hkv, P, D] (a strided view of the pool layout), so the prefix is read once.
    qg = q.transpose(0, 1).reshape(1, hkv, n * g, d)
    o, lse = _fused(qg, pk.transpose(0, 1)[None], pv.transpose(0, 1)[None], scale)
    return o.view(hkv, n, g, d).transpose(0, 1), lse.view(hkv, n, g).transpose(0, 1)


def _hidden(prob: Problem) -> torch.Tensor:
    """[B, T, S] bool: is suffix position j hidden from query t of request b?"""
    dev = prob.q.device
    t = torch.arange(prob.q.shape[1], device=dev)[None, :, None]
    j = torch.arange(prob.suffix_k.shape[1], device=dev)[None, None, :]
    offset = (prob.suffix_lens - prob.q_lens)[:, None, None]
    return (j - t > offset) | (j >= prob.suffix_lens[:, None, None])


def _suffix(q: torch.Tensor, prob: Problem) -> tuple[torch.Tensor, torch.Tensor]:
    """q [B, T, Hkv, G, D], causally over each request's own suffix -> (o [B, T, Hkv, G, D],
    lse [B, T, Hkv, G]), fp32, possibly strided; lse = -inf for queries seeing nothing."""
    b, t, hkv, g, d = q.shape
    s_len = prob.suffix_k.shape[1]
    if s_len == 0:
        return _empty(q.shape, q)
    # A full-length decode batch sees every suffix key: no mask to build.
    hidden = None if prob.full and t == 1 else _hidden(prob)
    if not _use_fused(q):
        return gemm_attention.suffix_gemm(q, prob.suffix_k, prob.suffix_v, prob.scale, hidden)
    qs = q.transpose(1, 2).reshape(b, hkv, t * g, d)  # rows (t, g) of each request's KV head
    if hidden is not None:  # [B, T, S] -> [B, 1, T*G, S]: the same mask for each group member
        hidden = hidden[:, None, :, None].expand(b, 1, t, g, s_len).reshape(b, 1, t * g, s_len)
    sk, sv = prob.suffix_k.transpose(1, 2), prob.suffix_v.transpose(1, 2)
    o, lse = _fused(qs, sk, sv, prob.scale, hidden)
    return o.view(b, hkv, t, g, d).transpose(1, 2), lse.view(b, hkv, t, g).transpose(1, 2)


def prefix_attention(
    q: torch.Tensor, prefix_k: torch.Tensor, prefix_v: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of N query tokens over a prefix they all see in full.

    q [N, Hq, D]; prefix_k/v [P, Hkv, D]. Returns (o [N, Hq, D] fp32, lse [N, Hq] fp32).
    """
    n, hq, d = q.shape
    hkv = prefix_k.shape[1]
    if hkv == 0 or hq % hkv:
        raise ValueError(f"num_heads {hq} is not a multiple of num_kv_heads {hkv}")
    o, lse = _prefix(q.view(n, hkv, hq // hkv, d), prefix_k, prefix_v, scale)
    return o.reshape(n, hq, d), lse.reshape(n, hq)


def suffix_attention(prob: Problem) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention of each request's queries over its own suffix.

    Returns (o [B, T, Hq, D] fp32, lse [B, T, Hq] fp32); lse = -inf for queries seeing nothing.
    """
    b, t, hq, d = prob.q.shape
    o, lse = _suffix(prob.q.view(b, t, -1, prob.group, d), prob)
    return o.reshape(b, t, hq, d), lse.reshape(b, t, hq)


def _attend(prob: Problem) -> torch.Tensor:
    b, t, hq, d = prob.q.shape
    hkv = prob.prefix_k.shape[1]
    q = prob.q.view(b, t, hkv, prob.group, d)
    o_suf, lse_suf = _suffix(q, prob)
    if prob.prefix_k.shape[0] == 0:  # nothing to merge
        return o_suf.reshape(b, t, hq, d)
    o_pre, lse_pre = _prefix(
        q.view(b * t, hkv, prob.group, d), prob.prefix_k, prob.prefix_v, prob.scale
    )
    shape = (b, t, hkv, prob.group)
    # Every query sees the whole non-empty prefix, so no row has both parts empty. The suffix
    # output goes first: for decode it is laid out [B, 1, Hkv, G, D], so the result is too and
    # the final reshape is a view.
    return mix_outputs(
        o_suf,
        lse_suf,
        o_pre.view(*shape, d),
        lse_pre.view(shape),
        never_both_empty=True,
    ).reshape(b, t, hq, d)


def shared_prefix_decode(
    q: torch.Tensor,
    prefix_k: torch.Tensor,
    prefix_v: torch.Tensor,
    suffix_k: Ragged,
    suffix_v: Ragged,
    suffix_lens: Lengths = None,
    *,
    scale: float | None = None,
) -> torch.Tensor:
    """One query token per request: q [B, Hq, D] -> [B, Hq, D].

    The query is the last suffix token (its K/V must already be in the suffix). See the module
    docstring for the other shapes. scale defaults to 1/sqrt(D).
    """
    return run_decode(_attend, q, prefix_k, prefix_v, suffix_k, suffix_v, suffix_lens, scale)


def shared_prefix_prefill(
    q: Ragged,
    prefix_k: torch.Tensor,
    prefix_v: torch.Tensor,
    suffix_k: Ragged,
    suffix_v: Ragged,
    suffix_lens: Lengths = None,
    q_lens: Lengths = None,
    *,
    scale: float | None = None,
) -> torch.Tensor | list[torch.Tensor]:
    """Several query tokens per request (chunked prefill), causal within the suffix.

    q: padded [B, T, Hq, D] with q_lens [B] (default all T) -> [B, T, Hq, D], padded rows zero;
    or a list of [T_b, Hq, D] -> a list of the same shapes. The queries of request b are its last
    q_lens[b] suffix tokens. See the module docstring for the other shapes.
    """
    return run_prefill(
        _attend, q, prefix_k, prefix_v, suffix_k, suffix_v, suffix_lens, q_lens, scale
    )
