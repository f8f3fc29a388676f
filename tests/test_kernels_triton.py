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

from parrot_kernels import merge_partials, pad_ragged, reference_attention  # noqa: E402
from parrot_kernels import shared_prefix as torch_path  # noqa: E402
from parrot_kernels import triton_shared_prefix as tsp  # noqa: E402
from parrot_kernels.triton_merge import merge_partials_triton  # noqa: E402

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
    errs = [(a.double() - b.double()).abs().max() for a, b in zip(got, want, strict=True)]
    return torch.stack(errs).max().item()  # nan if any element is nan (Python's max drops it)


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


# On a GPU, half-precision results are checked by ||got - want|| / ||want|| against an fp64
# reference on the same (rounded) inputs: rounding the output alone costs ~1.7e-3 in bf16 (8
# significant bits) and ~2e-4 in fp16, and the kernel also rounds its softmax weights to that
# dtype for the second matrix product, as flash attention does. fp32 keeps the max abs bound.
HALF_TOL = {torch.float16: 2e-3, torch.bfloat16: 1e-2}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _check(got, q, pk, pv, sk, sv, *, scale=None):
    """Compare Triton output [B, T, Hq, D] or list with the fp64 reference; returns the error."""
    up = [[x.double() for x in xs] for xs in (q, sk, sv)]
    want = reference_attention(up[0], pk.double(), pv.double(), up[1], up[2], scale=scale)
    got = [x.double() for x in got]
    if q[0].dtype == torch.float32:
        err = _max_err(got, want)
        assert err <= TOL
        return err
    diff = sum((a - b).pow(2).sum() for a, b in zip(got, want, strict=True)).sqrt()
    err = (diff / sum(b.pow(2).sum() for b in want).sqrt()).item()
    assert err <= HALF_TOL[q[0].dtype], err
    return err


def _poison_allocator():
    """Leave NaNs in the caching allocator's free blocks, so unwritten partials would show."""
    torch.full((64 << 20,), float("nan"), device=DEVICE)


@gpu_only
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize(
    "p_len,s_lens,hkv,group,d",
    [
        (2048, [16] * 16, 3, 3, 64),  # SmolLM2-135M heads; one row block, many prefix slices
        (777, [1, 300, 0, 65, 128], 3, 3, 64),  # ragged suffixes, one of them empty
        (4100, [(7 * i) % 41 + 1 for i in range(64)], 8, 4, 128),  # Llama-8B heads, 4 row blocks
    ],
)
def test_gpu_decode_matches_reference(dtype, p_len, s_lens, hkv, group, d):
    q, pk, pv, sk, sv = _make(0, p_len, hkv, group, d, [1] * len(s_lens), s_lens, dtype)
    _poison_allocator()
    got = tsp.shared_prefix_decode(torch.cat(q), pk, pv, sk, sv)
    assert got.dtype == dtype
    _check(got.unsqueeze(1), q, pk, pv, sk, sv)
    _check(
        torch_path.shared_prefix_decode(torch.cat(q), pk, pv, sk, sv).unsqueeze(1),
        q,
        pk,
        pv,
        sk,
        sv,
    )


@gpu_only
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize(
    "p_len,q_lens,s_lens,hkv,group,d",
    [
        (1000, [64, 1, 200, 17], [64, 30, 260, 17], 2, 4, 128),
        (3000, [256] * 6, [256, 300, 256, 400, 256, 512], 3, 3, 64),
    ],
)
def test_gpu_prefill_matches_reference(dtype, p_len, q_lens, s_lens, hkv, group, d):
    q, pk, pv, sk, sv = _make(2, p_len, hkv, group, d, q_lens, s_lens, dtype)
    _poison_allocator()
    _check(tsp.shared_prefix_prefill(q, pk, pv, sk, sv), q, pk, pv, sk, sv)


@gpu_only
def test_gpu_half_tolerance_catches_a_wrong_result():
    # The bf16 tolerance must still reject a plausible bug: the softmax scale off by 5%.
    q, pk, pv, sk, sv = _make(3, 2048, 3, 3, 64, [1] * 16, [16] * 16, torch.bfloat16)
    got = tsp.shared_prefix_decode(torch.cat(q), pk, pv, sk, sv, scale=1.05 * 64**-0.5)
    with pytest.raises(AssertionError):
        _check(got.unsqueeze(1), q, pk, pv, sk, sv)
    got = tsp.shared_prefix_decode(torch.cat(q), pk, pv, sk, sv, scale=1.05 * 64**-0.5)
    _check(got.unsqueeze(1), q, pk, pv, sk, sv, scale=1.05 * 64**-0.5)  # the right scale passes


@pytest.mark.parametrize("with_suffix_lens", [False, True])
def test_padded_decode_without_query_lengths(with_suffix_lens):
    # The engine's decode passes padded tensors, suffix lengths and no query lengths; the
    # kernel then takes T (and S) as numbers instead of loading lengths.
    s_lens = [7, 7, 7] if not with_suffix_lens else [7, 2, 5]
    q, pk, pv, sk, sv = _make(7, 30, 2, 3, 16, [1, 1, 1], s_lens)
    skp, sl = pad_ragged(sk)
    svp, _ = pad_ragged(sv)
    lens = sl if with_suffix_lens else None
    got = tsp.shared_prefix_decode(torch.cat(q), pk, pv, skp, svp, lens)
    assert _max_err(got.unsqueeze(1), reference_attention(q, pk, pv, sk, sv)) <= TOL


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("parts", [7, 150])  # 150: more parts than one tile holds
def test_triton_merge_matches_torch_merge(dtype, parts):
    g = torch.Generator().manual_seed(5)
    o = torch.randn(parts, 5, 3, 12, generator=g)  # 15 rows, head_dim 12 (not 2^k)
    lse = torch.randn(parts, 5, 3, generator=g) * 20
    lse[2:5] = float("-inf")  # some empty parts
    lse[:, 0, 0] = float("-inf")  # a row that saw no key at all
    o, lse = o.to(DEVICE), lse.to(DEVICE)
    want, _ = merge_partials(o, lse)
    got = merge_partials_triton(o, lse, dtype)
    assert got.dtype == dtype and got.shape == want.shape
    assert (got.float() - want).abs().max().item() <= (TOL if dtype == torch.float32 else 4e-3)
    assert not got[0, 0].any()


def test_interpreter_refuses_bf16():
    if ON_GPU:
        pytest.skip("compiled kernels take bf16")
    q, pk, pv, sk, sv = _make(6, 20, 1, 2, 16, [1, 1], [3, 4], torch.bfloat16)
    with pytest.raises(NotImplementedError, match="bf16"):
        tsp.shared_prefix_decode(torch.cat(q), pk, pv, sk, sv)
