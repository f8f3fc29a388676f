"""Merging partial attention results by their log-sum-exp.

Attention over a key set split into disjoint parts can be computed per part and then combined
exactly: part X yields its normalised output o_X and lse_X = log(sum_j exp(s_j)) over its own
keys, and the whole is the mix of the parts with weights exp(lse_X - lse). A part with no keys
has lse = -inf and weight 0; if every part is empty the result is o = 0, lse = -inf (our
convention for "no visible keys"; such parts must carry o = 0 or finite values).

Outputs are [..., D]; lses are [...] with the same leading shape, computed in fp32.
"""

from __future__ import annotations

import torch


def mix_outputs(
    o_a: torch.Tensor,
    lse_a: torch.Tensor,
    o_b: torch.Tensor,
    lse_b: torch.Tensor,
    *,
    never_both_empty: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The output half of `merge_attention`, for fp32 inputs and callers that need no lse.

    exp(lse_b - lse) = sigmoid(lse_b - lse_a): each weight is one op on an exact difference of
    the inputs (accurate for huge lses), and this few-op form matters on CPU, where every
    elementwise pass over a cold tensor costs as much as the arithmetic. never_both_empty: the
    caller knows no row has both parts empty, so o = lerp(o_a, o_b, w_b) in three ops.
    The output takes o_a's layout (pass the contiguous one first), or is written into out.
    """
    d = torch.sub(lse_b, lse_a).unsqueeze_(-1)
    if never_both_empty:
        return torch.lerp(o_a, o_b, d.sigmoid_(), out=out)
    # nan only where both parts are empty (-inf - -inf): both weights 0, so o = 0 there.
    w_b = torch.sigmoid(d).nan_to_num_(0.0)
    w_a = d.neg_().sigmoid_().nan_to_num_(0.0)
    return torch.addcmul(o_a * w_a, o_b, w_b, out=out)


def merge_attention(
    o_a: torch.Tensor, lse_a: torch.Tensor, o_b: torch.Tensor, lse_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine two partial results over disjoint key sets.

    o_a, o_b: [..., D] (any float dtype); lse_a, lse_b: [...] (natural log, -inf for an empty
    part). Returns (o [..., D] in o_a's dtype, lse [...] fp32).
    """
    lse_a, lse_b = lse_a.float(), lse_b.float()
    o = mix_outputs(o_a.float(), lse_a, o_b.float(), lse_b)
    return o.to(o_a.dtype), torch.logaddexp(lse_a, lse_b)  # -inf: both empty


def merge_partials(o: torch.Tensor, lse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine N partial results stacked on dim 0 (e.g. the KV slices of a split-KV kernel).

    o: [N, ..., D]; lse: [N, ...]. Returns (o [..., D] fp32, lse [...] fp32).
    """
    lse = lse.float()
    total = torch.logsumexp(lse, dim=0)  # -inf where every part is empty
    weights = torch.exp(lse - total.nan_to_num(neginf=0.0))  # all zero for empty rows
    return (o.float() * weights.unsqueeze(-1)).sum(dim=0), total
