"""Merging split-KV partial attention results in one Triton kernel (the GPU twin of
`merge.merge_partials`).

The torch merge takes about six kernels (logsumexp, exp, multiply, sum, cast) and writes fp32
temporaries the size of all partials; at decode sizes those launches cost more than the
attention itself. This kernel reads each partial once and writes the output in its final dtype.

Importing this module imports triton (see `triton_shared_prefix` for the interpreter switch).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _merge_kernel(
    PART, LSE, OUT,
    n_parts,
    stride_op, stride_or, stride_lp, stride_outr,
    HEAD_DIM: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    # One program per row: all its parts come in as one [BLOCK_P, BLOCK_D] tile, so the loads
    # are independent and in flight together (decode has few rows and ~2 parts per SM).
    row = tl.program_id(0).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    m = tl.full([], float("-inf"), tl.float32)
    total = tl.zeros([], tl.float32)
    acc = tl.zeros([BLOCK_D], tl.float32)
    for start in range(0, n_parts, BLOCK_P):  # one pass unless there are > BLOCK_P parts
        parts = start + tl.arange(0, BLOCK_P)
        p_ok = parts < n_parts
        lse = tl.load(LSE + parts * stride_lp + row, mask=p_ok, other=float("-inf"))
        o = tl.load(
            PART + parts[:, None] * stride_op + row * stride_or + offs_d[None, :],
            mask=p_ok[:, None] & d_ok[None, :],
            other=0.0,
        )
        m_new = tl.maximum(m, tl.max(lse, 0))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # no keys yet: exp(-inf) = 0
        alpha = tl.exp(m - m_use)
        w = tl.exp(lse - m_use)
        acc = acc * alpha + tl.sum(w[:, None] * o, 0)
        total = total * alpha + tl.sum(w, 0)
        m = m_new
    out = acc / tl.where(total > 0, total, 1.0)  # a row with no keys at all: 0
    tl.store(OUT + row * stride_outr + offs_d, out, mask=d_ok)


def merge_partials_triton(
    o: torch.Tensor, lse: torch.Tensor, out_dtype: torch.dtype
) -> torch.Tensor:
    """o [N, ..., D] and lse [N, ...] (fp32) -> merged [..., D] in out_dtype.

    Same convention as `merge_partials`: parts with lse = -inf weigh 0; rows where every part is
    empty get 0.
    """
    n, d = o.shape[0], o.shape[-1]
    o3 = o.reshape(n, -1, d)
    lse2 = lse.reshape(n, -1)
    o3, lse2 = (x if x.stride(-1) == 1 else x.contiguous() for x in (o3, lse2))
    rows = o3.shape[1]
    out = torch.empty(rows, d, dtype=out_dtype, device=o.device)
    block_p = min(64, triton.next_power_of_2(n))
    block_d = triton.next_power_of_2(d)
    _merge_kernel[(rows,)](
        o3, lse2, out,
        n,
        o3.stride(0), o3.stride(1), lse2.stride(0), out.stride(0),
        HEAD_DIM=d, BLOCK_P=block_p, BLOCK_D=block_d,
        num_warps=1 if block_p * block_d <= 1024 else 4,
    )  # fmt: skip
    return out.view(*o.shape[1:])
