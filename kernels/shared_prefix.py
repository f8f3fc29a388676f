"""Shared-prefix attention in plain torch (the CPU path; it also runs on any torch device).

Attention of request b over concat(prefix, suffix_b) is split at the prefix boundary:

* prefix part: every query of every request, and every query head of a KV group, reads the same
  prefix keys. Stacking them gives one [B*T*G, D] @ [D, P] GEMM per KV head, so the prefix K/V is
  read once per batch instead of once per request, and the GEMM runs at matrix-matrix rather than
  matrix-vector efficiency.
* suffix part: a small padded batched attention per request, with causal masking.

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

from .inputs import Lengths, Problem, Ragged, run_decode, run_prefill
from .merge import merge_attention

# Cap on the fp32 score matrix of one prefix GEMM; long prefills are processed in row chunks.
_MAX_SCORE_ELEMS = 1 << 24


def _exp_scores(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores [..., N] (-inf = hidden) -> (p = exp(s - m) written over s, m, total = sum p).

    Working in place matters on CPU: a fresh [M, N] probability buffer per call costs page
    faults that rival the GEMMs. m and total are [..., 1]; rows with no visible key get 0, 0.
    """
    m = s.amax(dim=-1, keepdim=True).nan_to_num_(neginf=0.0)
    p = s.sub_(m).exp_()
    return p, m, p.sum(dim=-1, keepdim=True)


def _normalise(
    o: torch.Tensor, m: torch.Tensor, total: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(unnormalised o [..., D], m, total) -> (o, lse [...]); rows without keys: 0 and -inf."""
    # total >= 1 wherever a key was visible (the maximum contributes exp(0)), else 0.
    return o.div_(total.clamp(min=1.0)), (m + total.log()).squeeze(-1)


def prefix_attention(
    q: torch.Tensor, prefix_k: torch.Tensor, prefix_v: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of N query tokens over a prefix they all see in full.

    q [N, Hq, D]; prefix_k/v [P, Hkv, D]. Returns (o [N, Hq, D] fp32, lse [N, Hq] fp32).
    """
    n, hq, d = q.shape
    hkv = prefix_k.shape[1]
    g = hq // hkv
    # Per KV head, K^T [D, P] and V [P, D] are strided views of the pool layout: no copies.
    kt = prefix_k.float().permute(1, 2, 0)  # [Hkv, D, P]
    v = prefix_v.float().permute(1, 0, 2)  # [Hkv, P, D]
    step = max(1, _MAX_SCORE_ELEMS // max(1, hq * prefix_k.shape[0]))
    outs, lses = [], []
    for lo in range(0, n, step):
        rows = q[lo : lo + step].float() * scale
        m = rows.shape[0]
        # [m, Hkv, G, D] -> [Hkv, m*G, D]: all queries of a KV group become rows of one GEMM.
        qg = rows.reshape(m, hkv, g, d).transpose(0, 1).reshape(hkv, m * g, d)
        if kt.shape[-1] == 0:  # empty prefix: the empty side of the merge
            o, lse = qg.new_zeros(hkv, m * g, d), qg.new_full((hkv, m * g), float("-inf"))
        else:
            p, mx, total = _exp_scores(torch.matmul(qg, kt))
            o, lse = _normalise(torch.matmul(p, v), mx, total)
        outs.append(o.view(hkv, m, g, d).transpose(0, 1).reshape(m, hq, d))
        lses.append(lse.view(hkv, m, g).transpose(0, 1).reshape(m, hq))
    if len(outs) == 1:
        return outs[0], lses[0]
    return torch.cat(outs), torch.cat(lses)


def _hidden(prob: Problem) -> torch.Tensor:
    """[B, T, S] bool: is suffix position j hidden from query t of request b?"""
    dev = prob.q.device
    t = torch.arange(prob.q.shape[1], device=dev)[None, :, None]
    j = torch.arange(prob.suffix_k.shape[1], device=dev)[None, None, :]
    offset = (prob.suffix_lens - prob.q_lens)[:, None, None]
    return (j - t > offset) | (j >= prob.suffix_lens[:, None, None])


def suffix_attention(prob: Problem) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention of each request's queries over its own suffix.

    Returns (o [B, T, Hq, D] fp32, lse [B, T, Hq] fp32); lse = -inf for queries seeing nothing.
    """
    q = prob.q
    b, t, hq, d = q.shape
    hkv, g, s_len = prob.suffix_k.shape[2], prob.group, prob.suffix_k.shape[1]
    sk, sv = prob.suffix_k.float(), prob.suffix_v.float()
    # [B, T, Hkv, G, D] -> [Hkv, B, T*G, D]: per KV head one batched GEMM over the requests.
    qs = (q.float() * prob.scale).reshape(b, t, hkv, g, d).permute(2, 0, 1, 3, 4)
    qs = qs.reshape(hkv, b, t * g, d)
    scores = torch.empty(hkv, b, t * g, s_len, dtype=torch.float32, device=q.device)
    # Looping over the few KV heads keeps K/V as strided views ([B, S, D] per head); a 4-D
    # matmul over [B, Hkv] would first copy the whole suffix.
    for h in range(hkv):
        torch.bmm(qs[h], sk[:, :, h].transpose(1, 2), out=scores[h])
    if not (prob.full and t == 1):  # a full-length decode batch sees every suffix key
        hidden = _hidden(prob)[None, :, :, None, :]  # broadcast over KV heads, group members
        scores.view(hkv, b, t, g, s_len).masked_fill_(hidden, float("-inf"))
    o = torch.empty(hkv, b, t * g, d, dtype=torch.float32, device=q.device)
    if s_len == 0:  # no suffix at all: the empty side of the merge
        o, lse = o.zero_(), scores.new_full((hkv, b, t * g), float("-inf"))
    else:
        p, mx, total = _exp_scores(scores)
        for h in range(hkv):
            torch.bmm(p[h], sv[:, :, h], out=o[h])
        o, lse = _normalise(o, mx, total)
    o = o.view(hkv, b, t, g, d).permute(1, 2, 0, 3, 4).reshape(b, t, hq, d)
    lse = lse.view(hkv, b, t, g).permute(1, 2, 0, 3).reshape(b, t, hq)
    return o, lse


def _attend(prob: Problem) -> torch.Tensor:
    b, t, hq, d = prob.q.shape
    o_pre, lse_pre = prefix_attention(
        prob.q.reshape(b * t, hq, d), prob.prefix_k, prob.prefix_v, prob.scale
    )
    o_suf, lse_suf = suffix_attention(prob)
    o, _ = merge_attention(o_pre.view(b, t, hq, d), lse_pre.view(b, t, hq), o_suf, lse_suf)
    return o


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
