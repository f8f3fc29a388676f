"""Triton shared-prefix attention against the naive reference.

Without CUDA the kernels run in Triton's interpreter on CPU (TRITON_INTERPRET=1 must be set
before the kernel module is imported, so this module sets it when no GPU is present). The
real-GPU tests skip cleanly without CUDA; everything skips where triton is not installed.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

ON_GPU = torch.cuda.is_available()
if not ON_GPU:
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton", reason="triton is not installed")

from parrot_kernels import pad_ragged, reference_attention  # noqa: E402
from parrot_kernels import shared_prefix as torch_path  # noqa: E402
from parrot_kernels import triton_shared_prefix as tsp  # noqa: E402

DEVICE = "cuda" if ON_GPU else "cpu"
TOL = 1e-5
gpu_only = pytest.mark.skipif(not ON_GPU, reason="needs a CUDA GPU")


def _make(seed, p_len, hkv, group, d, q_lens, s_lens, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(dtype=dtype, device=DEVICE)

    q = [rnd(t, hkv * group, d) for t in q_lens]
    sk = [rnd(s, hkv, d) for s in s_lens]
    sv = [rnd(s, hkv, d) for s in s_lens]
    return q, rnd(p_len, hkv, d), rnd(p_len, hkv, d), sk, sv


def _max_err(got, want):
    return max((a.float() - b.float()).abs().max().item() for a, b in zip(got, want, strict=True))


def test_runs_in_the_mode_we_expect():
    assert tsp.interpreting() == (not ON_GPU)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    p_len=st.one_of(st.just(1), st.integers(0, 40)),
    hd=st.tuples(st.integers(1, 2), st.sampled_from([1, 3])),
    d=st.sampled_from([8, 12, 16]),
    s_lens=st.lists(st.integers(0, 20), min_size=1, max_size=4),
)
def test_decode_matches_reference(seed, p_len, hd, d, s_lens):
    hkv, group = hd
    q, pk, pv, sk, sv = _make(seed, p_len, hkv, group, d, [1] * len(s_lens), s_lens)
    out = tsp.shared_prefix_decode(torch.cat(q), pk, pv, sk, sv)
    assert _max_err(out.unsqueeze(1), reference_attention(q, pk, pv, sk, sv)) <= TOL


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    p_len=st.one_of(st.just(1), st.integers(0, 40)),
    hd=st.tuples(st.integers(1, 2), st.sampled_from([1, 2])),
    lens=st.lists(st.tuples(st.integers(1, 9), st.integers(0, 20)), min_size=1, max_size=3),
)
def test_prefill_matches_reference(seed, p_len, hd, lens):
    hkv, group = hd
    q_lens = [t for t, _ in lens]
    s_lens = [t + extra for t, extra in lens]
    q, pk, pv, sk, sv = _make(seed, p_len, hkv, group, 16, q_lens, s_lens)
    got = tsp.shared_prefix_prefill(q, pk, pv, sk, sv)
    assert _max_err(got, reference_attention(q, pk, pv, sk, sv)) <= TOL


def test_padded_prefill_with_short_suffix_and_no_prefix():
    q, pk, pv, sk, sv = _make(1, 0, 2, 2, 8, [3, 2, 1], [1, 5, 0])
    qp, ql = pad_ragged(q)
    skp, sl = pad_ragged(sk)
    svp, _ = pad_ragged(sv)
    out = tsp.shared_prefix_prefill(qp, pk, pv, skp, svp, sl, ql, scale=0.5)
    want = reference_attention(q, pk, pv, sk, sv, scale=0.5)
    assert _max_err([out[i, :t] for i, t in enumerate([3, 2, 1])], want) <= TOL
    assert not out[2].any()  # nothing visible to request 2's query, and padding is zeroed


@gpu_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("p_len,s_lens", [(2048, [16] * 16), (777, [1, 300, 0, 65, 128])])
def test_gpu_decode_matches_reference(dtype, p_len, s_lens):
    q, pk, pv, sk, sv = _make(0, p_len, 3, 3, 64, [1] * len(s_lens), s_lens, dtype)
    want = reference_attention(q, pk, pv, sk, sv)
    tol = TOL if dtype == torch.float32 else 2e-2
    got = tsp.shared_prefix_decode(torch.cat(q), pk, pv, sk, sv)
    assert got.dtype == dtype
    assert _max_err(got.unsqueeze(1), want) <= tol
    got = torch_path.shared_prefix_decode(torch.cat(q), pk, pv, sk, sv)
    assert _max_err(got.unsqueeze(1), want) <= tol


@gpu_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_prefill_matches_reference(dtype):
    q_lens, s_lens = [64, 1, 200, 17], [64, 30, 260, 17]
    q, pk, pv, sk, sv = _make(2, 1000, 2, 4, 128, q_lens, s_lens, dtype)
    tol = TOL if dtype == torch.float32 else 2e-2
    got = tsp.shared_prefix_prefill(q, pk, pv, sk, sv)
    assert _max_err(got, reference_attention(q, pk, pv, sk, sv)) <= tol


def test_larger_tiles_and_single_slice(monkeypatch):
    # The GPU tile sizes (row blocks of 32/64, one KV slice) in the interpreter, on ragged input.
    real = tsp._launch_config

    def gpu_like(prefix_rows, suffix_rows, d, device):
        cfg = real(prefix_rows, suffix_rows, d, device)
        return {**cfg, "block_m_p": 64, "block_m_s": 32, "block_n": 32, "target": 1}

    monkeypatch.setattr(tsp, "_launch_config", gpu_like)
    q, pk, pv, sk, sv = _make(4, 45, 1, 3, 8, [5, 1, 9], [5, 33, 12])
    got = tsp.shared_prefix_prefill(q, pk, pv, sk, sv)
    assert _max_err(got, reference_attention(q, pk, pv, sk, sv)) <= TOL
