"""The two parts of shared-prefix attention in plain torch ops (GEMMs + elementwise passes).

Used on devices other than CPU (when the Triton path is not taken) and on a CPU whose torch lacks
the fused flash-attention op. Shapes follow `shared_prefix`: queries grouped per KV head as
[N, Hkv, G, D]; results come back as (o [..., Hkv, G, D] fp32, lse [..., Hkv, G] fp32).
"""

from __future__ import annotations

import torch

# Cap on the fp32 score matrix of one prefix GEMM; long prefills are processed in row chunks.
MAX_SCORE_ELEMS = 1 << 24


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


def prefix_gemm(
    q: torch.Tensor, prefix_k: torch.Tensor, prefix_v: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """q [N, Hkv, G, D] over a non-empty prefix [P, Hkv, D]: one [N*G, D] @ [D, P] GEMM per KV
    head (rows chunked to bound the score matrix)."""
    n, hkv, g, d = q.shape
    # Per KV head, K^T [D, P] and V [P, D] are strided views of the pool layout: no copies.
    kt = prefix_k.float().permute(1, 2, 0)  # [Hkv, D, P]
    v = prefix_v.float().permute(1, 0, 2)  # [Hkv, P, D]
    step = max(1, MAX_SCORE_ELEMS // max(1, hkv * g * prefix_k.shape[0]))
    outs, lses = [], []
    for lo in range(0, n, step):
        rows = q[lo : lo + step].float() * scale
        m = rows.shape[0]
        qg = rows.transpose(0, 1).reshape(hkv, m * g, d)  # all queries of a KV head: one GEMM
        p, mx, total = _exp_scores(torch.matmul(qg, kt))
        o, lse = _normalise(torch.matmul(p, v), mx, total)
        outs.append(o.view(hkv, m, g, d).transpose(0, 1))
        lses.append(lse.view(hkv, m, g).transpose(0, 1))
    if len(outs) == 1:
        return outs[0], lses[0]
    return torch.cat(outs), torch.cat(lses)


def suffix_gemm(
    q: torch.Tensor,
    suffix_k: torch.Tensor,
    suffix_v: torch.Tensor,
    scale: float,
    hidden: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """q [B, T, Hkv, G, D] over each request's own non-empty suffix [B, S, Hkv, D]; hidden
    [B, T, S] (True = masked) or None. Per KV head, one batched GEMM over the requests."""
    b, t, hkv, g, d = q.shape
    s_len = suffix_k.shape[1]
    sk, sv = suffix_k.float(), suffix_v.float()
    qs = (q.float() * scale).permute(2, 0, 1, 3, 4).reshape(hkv, b, t * g, d)
    scores = torch.empty(hkv, b, t * g, s_len, dtype=torch.float32, device=q.device)
    # Looping over the few KV heads keeps K/V as strided views ([B, S, D] per head); a 4-D
    # matmul over [B, Hkv] would first copy the whole suffix.
    for h in range(hkv):
        torch.bmm(qs[h], sk[:, :, h].transpose(1, 2), out=scores[h])
    if hidden is not None:  # broadcast over KV heads and group members
        scores.view(hkv, b, t, g, s_len).masked_fill_(hidden[None, :, :, None], float("-inf"))
    o = torch.empty(hkv, b, t * g, d, dtype=torch.float32, device=q.device)
    p, mx, total = _exp_scores(scores)
    for h in range(hkv):
        torch.bmm(p[h], sv[:, :, h], out=o[h])
    o, lse = _normalise(o, mx, total)
    return o.view(hkv, b, t, g, d).permute(1, 2, 0, 3, 4), lse.view(hkv, b, t, g).permute(
        1, 2, 0, 3
    )
