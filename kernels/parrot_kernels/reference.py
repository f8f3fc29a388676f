"""Naive per-request attention: the ground truth the shared-prefix kernels are tested against.

Deliberately simple and slow: one request at a time, softmax over concat(prefix, suffix) with an
explicit mask, in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def reference_attention(
    q: Sequence[torch.Tensor],
    prefix_k: torch.Tensor,
    prefix_v: torch.Tensor,
    suffix_k: Sequence[torch.Tensor],
    suffix_v: Sequence[torch.Tensor],
    *,
    scale: float | None = None,
) -> list[torch.Tensor]:
    """Per request b: q[b] [T_b, Hq, D]; suffix_k/v[b] [S_b, Hkv, D]; prefix_k/v [P, Hkv, D].

    Query t of request b sits at suffix position S_b - T_b + t and sees the prefix and suffix
    positions up to its own. Returns [T_b, Hq, D] per request; 0 for a query that sees nothing.
    """
    out = []
    for qb, kb, vb in zip(q, suffix_k, suffix_v, strict=True):
        t_len, hq, d = qb.shape
        p_len, s_len = prefix_k.shape[0], kb.shape[0]
        g = hq // prefix_k.shape[1]
        keys = torch.cat([prefix_k, kb]).double().repeat_interleave(g, dim=1)  # [L, Hq, D]
        vals = torch.cat([prefix_v, vb]).double().repeat_interleave(g, dim=1)
        s = torch.einsum("thd,lhd->htl", qb.double(), keys) * (d**-0.5 if scale is None else scale)
        pos = torch.arange(p_len + s_len, device=qb.device)[None, :]
        last_seen = p_len + s_len - t_len + torch.arange(t_len, device=qb.device)[:, None]
        seen = (pos < p_len) | (pos <= last_seen)  # [T, L]; the prefix is always visible
        s = s.masked_fill(~seen, float("-inf"))
        w = torch.softmax(s, dim=-1).nan_to_num(0.0)  # all -inf rows give nan: no keys, output 0
        out.append(torch.einsum("htl,lhd->thd", w, vals).to(qb.dtype))
    return out
