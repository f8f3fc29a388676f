"""Shared-prefix attention in Triton (the GPU path); same API as `shared_prefix`.

Split-KV ("flash decoding") over two key sets:

* prefix kernel: a program takes BLOCK_M rows of the stacked (token, group member) queries of
  one KV head and one slice of the prefix, so each prefix tile is loaded once for BLOCK_M query
  rows of *all* requests, and the slices spread a short batch over the whole GPU.
* suffix kernel: a program takes the rows of one request and KV head, and one slice of its
  suffix, with causal masking (query t of request b sees suffix keys j <= t + S_b - T_b).

Every (slice, query row) writes a normalised partial output and its log-sum-exp; the partials
are combined by one more kernel (`triton_merge`). Inputs may be fp32, fp16 or bf16; partials
and the merge are fp32, the output has the queries' dtype.
fp32 dot products run in IEEE mode (no TF32), so fp32 results match the reference.

Importing this module imports triton. With TRITON_INTERPRET=1 set before that import, the
kernels run on CPU tensors in Triton's interpreter (used by the tests).
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

from .inputs import Lengths, Problem, Ragged, run_decode, run_prefill
from .triton_merge import merge_partials_triton

_LOG2E = 1.4426950408889634


@triton.jit
def _attend(
    q,
    k_ptr,
    v_ptr,
    stride_kn,
    stride_vn,
    lo,
    hi,
    last_key,
    offs_d,
    d_ok,
    qk_scale,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Online softmax of q [BLOCK_M, BLOCK_D] over keys lo..hi-1; row r sees keys <= last_key[r].

    Scores are in base-2 units (qk_scale includes log2(e)). Returns (acc, m, l): unnormalised
    output, running max and running sum; l = 0 for rows that saw no key.
    """
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start in range(lo, hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        n_ok = offs_n < hi
        k = tl.load(
            k_ptr + offs_n[None, :] * stride_kn + offs_d[:, None],
            mask=n_ok[None, :] & d_ok[:, None],
            other=0.0,
        )
        s = tl.dot(q, k, input_precision=PRECISION) * qk_scale
        s = tl.where(n_ok[None, :] & (offs_n[None, :] <= last_key[:, None]), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # A row that has seen nothing yet keeps max -inf; shift it by 0 so exp2 gives 0, not nan.
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_use[:, None])
        alpha = tl.math.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(
            v_ptr + offs_n[:, None] * stride_vn + offs_d[None, :],
            mask=n_ok[:, None] & d_ok[None, :],
            other=0.0,
        )
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def _store_partial(o_ptrs, lse_ptrs, acc, m_i, l_i, row_ok, d_ok):
    seen = l_i > 0
    l_safe = tl.where(seen, l_i, 1.0)
    o = acc / l_safe[:, None]
    lse = (m_i + tl.math.log2(l_safe)) * 0.6931471805599453  # ln 2: back to natural log
    lse = tl.where(seen, lse, float("-inf"))
    tl.store(o_ptrs, o, mask=row_ok[:, None] & d_ok[None, :])
    tl.store(lse_ptrs, lse, mask=row_ok)


@triton.jit
def _prefix_kernel(
    Q, K, V, OUT, LSE,
    n_rows, p_len, split_len,
    stride_qn, stride_qh, stride_kn, stride_kh, stride_vn, stride_vh,
    stride_os, stride_on, stride_oh, stride_ls, stride_ln,
    qk_scale,
    HEAD_DIM: tl.constexpr, GROUP: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    # Row r of KV head h is query token r // GROUP, query head h * GROUP + r % GROUP.
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    row_ok = rows < n_rows
    tok = rows // GROUP
    head = kvh * GROUP + rows % GROUP
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    q = tl.load(
        Q + tok[:, None] * stride_qn + head[:, None] * stride_qh + offs_d[None, :],
        mask=row_ok[:, None] & d_ok[None, :],
        other=0.0,
    )
    lo = split * split_len
    hi = tl.minimum(lo + split_len, p_len)
    everything = tl.full([BLOCK_M], p_len, tl.int32)  # the prefix is visible to every query
    acc, m_i, l_i = _attend(
        q, K + kvh * stride_kh, V + kvh * stride_vh, stride_kn, stride_vn, lo, hi, everything,
        offs_d, d_ok, qk_scale, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION,
    )  # fmt: skip
    o_ptrs = OUT + split * stride_os + tok[:, None] * stride_on + head[:, None] * stride_oh
    lse_ptrs = LSE + split * stride_ls + tok * stride_ln + head
    _store_partial(o_ptrs + offs_d[None, :], lse_ptrs, acc, m_i, l_i, row_ok, d_ok)


@triton.jit
def _suffix_kernel(
    Q, K, V, OUT, LSE, Q_LENS, S_LENS,
    q_tokens, s_tokens, num_kv_heads, split_len, first_split,
    stride_qn, stride_qh, stride_kb, stride_kn, stride_kh, stride_vb, stride_vn, stride_vh,
    stride_os, stride_on, stride_oh, stride_ls, stride_ln,
    qk_scale,
    HEAD_DIM: tl.constexpr, GROUP: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr, HAS_Q_LENS: tl.constexpr, HAS_S_LENS: tl.constexpr,
):  # fmt: skip
    # Without Q_LENS / S_LENS every request has q_tokens queries / s_tokens suffix tokens.
    # Row r of (request b, KV head h) is query t = r // GROUP, head h * GROUP + r % GROUP.
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    b = tl.program_id(1) // num_kv_heads
    kvh = tl.program_id(1) % num_kv_heads
    split = tl.program_id(2)
    t = rows // GROUP
    head = kvh * GROUP + rows % GROUP
    row_ok = t < q_tokens  # padded query rows are computed too; their output is dropped later
    tok = b * q_tokens + t
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    q = tl.load(
        Q + tok[:, None] * stride_qn + head[:, None] * stride_qh + offs_d[None, :],
        mask=row_ok[:, None] & d_ok[None, :],
        other=0.0,
    )
    if HAS_S_LENS:  # noqa: SIM108 (constexpr branches: only one is compiled)
        s_len = tl.load(S_LENS + b).to(tl.int32)
    else:
        s_len = s_tokens
    if HAS_Q_LENS:  # noqa: SIM108
        q_len = tl.load(Q_LENS + b).to(tl.int32)
    else:
        q_len = q_tokens
    last_key = t + (s_len - q_len)  # the queries are the last q_len suffix tokens
    lo = split * split_len
    hi = tl.minimum(lo + split_len, s_len)
    # No row of this block sees past its largest last_key: skip those tiles entirely.
    hi = tl.minimum(hi, tl.max(tl.where(row_ok, last_key, -1), 0) + 1)
    acc, m_i, l_i = _attend(
        q, K + b * stride_kb + kvh * stride_kh, V + b * stride_vb + kvh * stride_vh,
        stride_kn, stride_vn, lo, hi, last_key,
        offs_d, d_ok, qk_scale, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION,
    )  # fmt: skip
    s_idx = first_split + split
    o_ptrs = OUT + s_idx * stride_os + tok[:, None] * stride_on + head[:, None] * stride_oh
    lse_ptrs = LSE + s_idx * stride_ls + tok * stride_ln + head
    _store_partial(o_ptrs + offs_d[None, :], lse_ptrs, acc, m_i, l_i, row_ok, d_ok)


def interpreting() -> bool:
    """Do @triton.jit kernels run in the CPU interpreter (TRITON_INTERPRET=1)?"""
    knobs = getattr(triton, "knobs", None)  # triton >= 3.4
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _splits(length: int, programs: int, target: int, block_n: int) -> tuple[int, int]:
    """(number of KV slices, slice length): enough slices for ~target programs in all."""
    if length <= 0:
        return 1, block_n  # one empty slice still writes lse = -inf for the merge
    n = max(1, min(triton.cdiv(length, block_n), triton.cdiv(target, programs)))
    split_len = triton.cdiv(triton.cdiv(length, n), block_n) * block_n
    return triton.cdiv(length, split_len), split_len


@functools.lru_cache
def _num_sms(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _launch_config(prefix_rows: int, suffix_rows: int, d: int, device: torch.device) -> dict:
    """Tile sizes and the number of programs to aim for (a function so tests can vary it)."""
    block_d = max(16, triton.next_power_of_2(d))  # tl.dot needs >= 16, tl.arange a power of 2
    if interpreting():  # small tiles keep the interpreter fast and still span several tiles
        return dict(
            block_m_p=16, block_m_s=16, block_n=16, block_d=block_d, target=4,
            num_warps=4, num_stages=1,
        )  # fmt: skip
    # One row block should hold all rows that share a KV tile (decode: B*G prefix rows), so
    # that the tile is read from memory once.
    return dict(
        block_m_p=min(64, max(16, triton.next_power_of_2(prefix_rows))),
        block_m_s=min(64, max(16, triton.next_power_of_2(suffix_rows))),
        block_n=64 if block_d <= 64 else 32,  # big head_dim: smaller tiles, fewer spills
        block_d=block_d,
        # About 2 programs per multiprocessor: enough to hide latency, few enough that each
        # program's share of the split is worth its merge.
        target=2 * _num_sms(device),
        num_warps=4,
        num_stages=3,
    )


def _unit_last(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _attend_problem(prob: Problem) -> torch.Tensor:
    if interpreting() and prob.q.dtype == torch.bfloat16:
        # Seen with triton 3.9: the interpreter multiplies bf16 bit patterns as integers in
        # tl.dot. Compiled kernels are fine (tested on a GPU).
        raise NotImplementedError("Triton's interpreter gets bf16 tl.dot wrong; use fp16/fp32")
    b, t, hq, d = prob.q.shape
    p_len, hkv = prob.prefix_k.shape[:2]
    s_len, g, n_tok = prob.suffix_k.shape[1], prob.group, b * t
    q = prob.q.contiguous().view(n_tok, hq, d)
    pk, pv, sk, sv = (
        _unit_last(x) for x in (prob.prefix_k, prob.prefix_v, prob.suffix_k, prob.suffix_v)
    )
    cfg = _launch_config(n_tok * g, t * g, d, q.device)
    block_m_p, block_m_s, block_n = cfg["block_m_p"], cfg["block_m_s"], cfg["block_n"]
    block_d, target = cfg["block_d"], cfg["target"]
    rows_p, rows_s = triton.cdiv(n_tok * g, block_m_p), triton.cdiv(t * g, block_m_s)
    n_p, len_p = _splits(p_len, rows_p * hkv, target, block_n)
    n_s, len_s = _splits(s_len, rows_s * b * hkv, target, block_n)

    o = torch.empty(n_p + n_s, n_tok, hq, d, dtype=torch.float32, device=q.device)
    lse = torch.empty(n_p + n_s, n_tok, hq, dtype=torch.float32, device=q.device)
    qk_scale = prob.scale * _LOG2E
    precision = "ieee" if q.dtype == torch.float32 else "tf32"  # tf32 only matters for fp32
    meta = dict(HEAD_DIM=d, GROUP=g, BLOCK_N=block_n, BLOCK_D=block_d, PRECISION=precision)
    meta.update(num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    _prefix_kernel[(rows_p, hkv, n_p)](
        q, pk, pv, o, lse,
        n_tok * g, p_len, len_p,
        q.stride(0), q.stride(1), pk.stride(0), pk.stride(1), pv.stride(0), pv.stride(1),
        o.stride(0), o.stride(1), o.stride(2), lse.stride(0), lse.stride(1),
        qk_scale, BLOCK_M=block_m_p, **meta,
    )  # fmt: skip
    # Lengths not given are not built (a kernel launch each): the kernel takes T and S instead.
    q_lens, s_lens = prob.given_q_lens, prob.given_suffix_lens
    _suffix_kernel[(rows_s, b * hkv, n_s)](
        q, sk, sv, o, lse,
        q if q_lens is None else q_lens.contiguous(), q if s_lens is None else s_lens.contiguous(),
        t, s_len, hkv, len_s, n_p,
        q.stride(0), q.stride(1), sk.stride(0), sk.stride(1), sk.stride(2),
        sv.stride(0), sv.stride(1), sv.stride(2),
        o.stride(0), o.stride(1), o.stride(2), lse.stride(0), lse.stride(1),
        qk_scale, BLOCK_M=block_m_s, HAS_Q_LENS=q_lens is not None,
        HAS_S_LENS=s_lens is not None, **meta,
    )  # fmt: skip
    return merge_partials_triton(o, lse, q.dtype).view(b, t, hq, d)


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
    """Triton twin of `shared_prefix.shared_prefix_decode`: q [B, Hq, D] -> [B, Hq, D]."""
    return run_decode(
        _attend_problem, q, prefix_k, prefix_v, suffix_k, suffix_v, suffix_lens, scale
    )


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
    """Triton twin of `shared_prefix.shared_prefix_prefill` (same shapes and conventions)."""
    return run_prefill(
        _attend_problem, q, prefix_k, prefix_v, suffix_k, suffix_v, suffix_lens, q_lens, scale
    )
