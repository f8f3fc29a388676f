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
    plain-op path (`gemm_attention`) does the same work. The torch-namespace binding is taken
    over `torch.ops.aten...`, whose Python dispatch layer costs tens of microseconds cold.
    """
    return getattr(torch, "_scaled_dot_product_flash_attention_for_cpu", None)


_FUSED_CPU = _fused_cpu_op()


def _use_fused(q: torch.Tensor) -> bool:
    return _FUSED_CPU is not None and q.device.type == "cpu"


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float32 else x.float()


def _fused(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    hidden: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused attention with lse: q [N, H, L, D], k/v [N, H, S, D] (S > 0, all fp32), hidden
    broadcastable to [N, H, L, S] (True = masked). Returns (o [N, H, L, D], lse [N, H, L]).

    One cache-blocked kernel: the scores never make a round trip through memory, which on CPU
    is most of the plain path's cost (its max, subtract, exp and sum passes over them).
    """
    if hidden is None:
        return _FUSED_CPU(q, k, v, scale=scale)
    mask = torch.where(hidden, float("-inf"), 0.0)
    o, lse = _FUSED_CPU(q, k, v, attn_mask=mask, scale=scale)
    # The op reports lse = 0 (and o = 0) for rows that see no key.
    return o, lse.masked_fill(hidden.all(dim=-1).expand(lse.shape), float("-inf"))


def _empty(shape: tuple[int, ...], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The empty side of a merge: o = 0, lse = -inf."""
    o = like.new_zeros(shape, dtype=torch.float32)
    return o, like.new_full(shape[:-1], float("-inf"), dtype=torch.float32)


def _hidden(prob: Problem) -> torch.Tensor | None:
    """[B, T, S] bool: is suffix position j hidden from query t of request b? None when nothing
    is (a full-length decode batch sees every suffix key)."""
    if prob.full and prob.q.shape[1] == 1:
        return None
    dev = prob.q.device
    t = torch.arange(prob.q.shape[1], device=dev)[None, :, None]
    j = torch.arange(prob.suffix_k.shape[1], device=dev)[None, None, :]
    offset = (prob.suffix_lens - prob.q_lens)[:, None, None]
    return (j - t > offset) | (j >= prob.suffix_lens[:, None, None])


# Both paths below are straight-line code on purpose: on CPU every op call, even a view, costs
# microseconds, and tens of them when the weights streaming between layers have evicted the
# caches (as they have in an engine step), so steps that only reshape are kept to a minimum.


def _attend_fused(prob: Problem) -> torch.Tensor:
    """The CPU path: each part is one call of the fused op. -> [B, T, Hkv, G, D] (a view)."""
    b, t, hq, d = prob.q.shape
    hkv, g, s_len = prob.prefix_k.shape[1], prob.group, prob.suffix_k.shape[1]
    # Rows (t, g) of each request's KV head; a view for decode.
    qs = _f32(prob.q).view(b, t, hkv, g, d).transpose(1, 2).reshape(b, hkv, t * g, d)
    if s_len:
        hidden = _hidden(prob)
        if hidden is not None:  # [B, T, S] -> [B, 1, T*G, S]: the same for each group member
            hidden = hidden[:, None, :, None].expand(b, 1, t, g, s_len).reshape(b, 1, -1, s_len)
        sk, sv = _f32(prob.suffix_k).transpose(1, 2), _f32(prob.suffix_v).transpose(1, 2)
        o, lse = _fused(qs, sk, sv, prob.scale, hidden)
    else:
        o, lse = _empty(qs.shape, qs)
    if prob.prefix_k.shape[0]:
        # All queries of a KV head are the rows of one problem over that head's keys, [1, Hkv,
        # B*T*G, D] against [1, Hkv, P, D] (a view of the pool layout): the prefix is read once
        # for the whole batch.
        qg = qs.transpose(0, 1).reshape(1, hkv, b * t * g, d)
        pk, pv = (
            _f32(prob.prefix_k).transpose(0, 1)[None],
            _f32(prob.prefix_v).transpose(0, 1)[None],
        )
        o_pre, lse_pre = _fused(qg, pk, pv, prob.scale)
        # Every query sees the whole non-empty prefix, so no row has both parts empty. The
        # merge writes [B, T, Hkv, G, D] in order, so that [B, T, Hq, D] is a view of it (the
        # op's outputs are laid out [.., L, H, D], which would cost a copy at the end).
        out = qs.new_empty((b, t, hkv, g, d))
        mix_outputs(
            o.view(b, hkv, t, g, d),
            lse.view(b, hkv, t, g),
            o_pre.view(hkv, b, t, g, d).transpose(0, 1),
            lse_pre.view(hkv, b, t, g).transpose(0, 1),
            never_both_empty=True,
            out=out.transpose(1, 2),
        )
        return out
    return o.view(b, hkv, t, g, d).transpose(1, 2)


def _attend_plain(prob: Problem) -> torch.Tensor:
    """Other devices, or no fused op: GEMMs and elementwise passes. -> [B, T, Hkv, G, D]."""
    b, t, hq, d = prob.q.shape
    hkv, g = prob.prefix_k.shape[1], prob.group
    q = _f32(prob.q).view(b, t, hkv, g, d)
    if prob.suffix_k.shape[1]:
        sk, sv = _f32(prob.suffix_k), _f32(prob.suffix_v)
        o, lse = gemm_attention.suffix_gemm(q, sk, sv, prob.scale, _hidden(prob))
    else:
        o, lse = _empty(q.shape, q)
    if prob.prefix_k.shape[0]:
        pk, pv = _f32(prob.prefix_k), _f32(prob.prefix_v)
        o_pre, lse_pre = gemm_attention.prefix_gemm(q.view(b * t, hkv, g, d), pk, pv, prob.scale)
        o = mix_outputs(
            o, lse, o_pre.view(b, t, hkv, g, d), lse_pre.view(b, t, hkv, g), never_both_empty=True
        )
    return o


def _attend(prob: Problem) -> torch.Tensor:
    return (_attend_fused if _use_fused(prob.q) else _attend_plain)(prob)


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
