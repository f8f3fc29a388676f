"""parrot_kernels: LSE merge, shared-prefix attention (torch paths) and batch grouping."""

from __future__ import annotations

import math
from contextlib import contextmanager

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from parrot_kernels import (
    BatchPlan,
    PrefixGroup,
    gemm_attention,
    merge_attention,
    merge_partials,
    pad_ragged,
    plan_shared_prefix,
    reference_attention,
    shared_prefix_decode,
    shared_prefix_prefill,
)
from parrot_kernels import shared_prefix as sp

TOL = 1e-5
NEG_INF = float("-inf")


def _attend_with_lse(q, k, v):
    """Plain softmax attention over keys [N, D] for queries [M, D], with lse (fp64)."""
    s = q.double() @ k.double().T
    lse = torch.logsumexp(s, dim=-1)
    return (torch.softmax(s, dim=-1) @ v.double()).float(), lse.float()


# ---- merge -----------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 20), st.integers(0, 20), st.floats(-30, 30))
def test_merge_equals_attention_over_union(seed, n_a, n_b, bias):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(3, 8, generator=g)
    k = torch.randn(n_a + n_b, 8, generator=g)
    k[:n_a] += bias / 8  # make one part dominate to stress the rescaling
    v = torch.randn(n_a + n_b, 5, generator=g)
    o_a, l_a = _attend_with_lse(q, k[:n_a], v[:n_a])
    if n_b:
        o_b, l_b = _attend_with_lse(q, k[n_a:], v[n_a:])
    else:  # an empty part
        o_b, l_b = torch.zeros(3, 5), torch.full((3,), NEG_INF)
    o, lse = merge_attention(o_a, l_a, o_b, l_b)
    o_ref, l_ref = _attend_with_lse(q, k, v)
    assert (o - o_ref).abs().max() <= TOL
    assert torch.allclose(lse, l_ref, atol=1e-4, rtol=1e-6)


def test_merge_with_neg_inf_parts():
    o_a = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    o_b = torch.tensor([[7.0, 8.0], [9.0, 10.0], [11.0, 12.0]])
    l_a = torch.tensor([NEG_INF, 0.5, NEG_INF])
    l_b = torch.tensor([1.5, NEG_INF, NEG_INF])
    o, lse = merge_attention(o_a, l_a, o_b, l_b)
    assert torch.equal(o, torch.tensor([[7.0, 8.0], [3.0, 4.0], [0.0, 0.0]]))
    assert lse.tolist() == [1.5, 0.5, NEG_INF]
    assert not torch.isnan(o).any()


def test_merge_is_stable_for_huge_lse():
    o_a, o_b = torch.ones(1, 2), torch.zeros(1, 2)
    o, lse = merge_attention(o_a, torch.tensor([1e4]), o_b, torch.tensor([1e4 + 1.0]))
    assert torch.allclose(o, torch.full((1, 2), 1 / (1 + math.e)))
    assert torch.allclose(lse, torch.tensor([1e4 + math.log(1 + math.e)]))


def test_merge_keeps_dtype():
    o, lse = merge_attention(
        torch.ones(2, 4, dtype=torch.bfloat16),
        torch.zeros(2),
        torch.ones(2, 4, dtype=torch.bfloat16),
        torch.zeros(2),
    )
    assert o.dtype == torch.bfloat16 and lse.dtype == torch.float32
    assert torch.allclose(lse, torch.full((2,), math.log(2.0)))


def test_merge_partials_matches_pairwise_and_handles_empty():
    g = torch.Generator().manual_seed(0)
    o = torch.randn(4, 3, 2, 6, generator=g)
    lse = torch.randn(4, 3, 2, generator=g) * 5
    lse[1, 0, 0] = NEG_INF
    lse[:, 2, 1] = NEG_INF  # a row where every part is empty
    got_o, got_lse = merge_partials(o, lse)
    want_o, want_lse = o[0], lse[0]
    for i in range(1, 4):
        want_o, want_lse = merge_attention(want_o, want_lse, o[i], lse[i])
    assert (got_o - want_o).abs().max() <= TOL
    assert torch.equal(torch.isneginf(got_lse), torch.isneginf(want_lse))
    finite = torch.isfinite(want_lse)
    assert torch.allclose(got_lse[finite], want_lse[finite], atol=1e-5)
    assert torch.equal(got_o[2, 1], torch.zeros(6))


# ---- shared-prefix attention (torch) ---------------------------------------------------------


def _make(seed, batch, p_len, hkv, group, d, q_lens, s_lens, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(dtype)

    pk, pv = rnd(p_len, hkv, d), rnd(p_len, hkv, d)
    q = [rnd(t, hkv * group, d) for t in q_lens]
    sk = [rnd(s, hkv, d) for s in s_lens]
    sv = [rnd(s, hkv, d) for s in s_lens]
    return q, pk, pv, sk, sv


@contextmanager
def _path(plain: bool):
    """Run on the plain-op path (what non-CPU devices, and torch builds without the fused CPU
    op, take) when plain, else on the fused CPU op."""
    saved = sp._FUSED_CPU
    if plain:
        sp._FUSED_CPU = None
    try:
        yield
    finally:
        sp._FUSED_CPU = saved


def test_cpu_takes_the_fused_path():
    # The pinned torch has the op: the speed path is the one every other test here exercises.
    assert sp._FUSED_CPU is not None and sp._use_fused(torch.zeros(1))


def _max_err(got, want):
    return max((a.float() - b.float()).abs().max().item() for a, b in zip(got, want, strict=True))


heads = st.tuples(st.integers(1, 3), st.sampled_from([1, 2, 3, 4]))  # (num_kv_heads, group)
head_dims = st.sampled_from([1, 4, 8, 12, 16, 32, 64])


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    p_len=st.one_of(st.just(1), st.integers(0, 48)),
    hd=heads,
    d=head_dims,
    s_lens=st.lists(st.integers(0, 12), min_size=1, max_size=6),
    padded=st.booleans(),
    plain=st.booleans(),
)
def test_decode_matches_reference(seed, p_len, hd, d, s_lens, padded, plain):
    hkv, group = hd
    q, pk, pv, sk, sv = _make(seed, len(s_lens), p_len, hkv, group, d, [1] * len(s_lens), s_lens)
    qd = torch.cat(q)  # [B, Hq, D]
    with _path(plain):
        if padded:
            skp, lens = pad_ragged(sk)
            svp, _ = pad_ragged(sv)
            out = shared_prefix_decode(qd, pk, pv, skp, svp, lens)
        else:
            out = shared_prefix_decode(qd, pk, pv, sk, sv)
    want = reference_attention(q, pk, pv, sk, sv)
    assert out.shape == qd.shape and out.dtype == qd.dtype
    assert _max_err(out.unsqueeze(1), want) <= TOL


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    p_len=st.one_of(st.just(1), st.integers(0, 48)),
    hd=heads,
    d=head_dims,
    lens=st.lists(st.tuples(st.integers(1, 7), st.integers(0, 8)), min_size=1, max_size=5),
    padded=st.booleans(),
    plain=st.booleans(),
)
def test_prefill_matches_reference(seed, p_len, hd, d, lens, padded, plain):
    hkv, group = hd
    q_lens = [t for t, _ in lens]
    s_lens = [t + extra for t, extra in lens]  # the suffix ends with the queried tokens
    q, pk, pv, sk, sv = _make(seed, len(lens), p_len, hkv, group, d, q_lens, s_lens)
    want = reference_attention(q, pk, pv, sk, sv)
    if padded:
        qp, ql = pad_ragged(q)
        skp, sl = pad_ragged(sk)
        svp, _ = pad_ragged(sv)
        with _path(plain):
            out = shared_prefix_prefill(qp, pk, pv, skp, svp, sl, ql)
        assert out.shape == qp.shape
        got = [out[i, :t] for i, t in enumerate(q_lens)]
        for i, t in enumerate(q_lens):  # padded query rows come back as zeros
            assert not out[i, t:].any()
    else:
        with _path(plain):
            got = shared_prefix_prefill(q, pk, pv, sk, sv)
        assert [x.shape for x in got] == [x.shape for x in q]
    assert _max_err(got, want) <= TOL


def test_prefill_queries_beyond_suffix_see_the_prefix():
    # Fewer suffix tokens than queries: the first queries see only the prefix (and none of the
    # suffix); with an empty prefix too they see nothing and get zeros.
    for plain in (False, True):
        for p_len in (5, 0):
            q, pk, pv, sk, sv = _make(3, 2, p_len, 2, 2, 8, [4, 3], [1, 0])
            with _path(plain):
                got = shared_prefix_prefill(q, pk, pv, sk, sv)
            assert _max_err(got, reference_attention(q, pk, pv, sk, sv)) <= TOL
        assert not got[1].any()  # no prefix, no suffix: nothing to see


def test_explicit_scale_and_long_prefill_chunking(monkeypatch):
    monkeypatch.setattr(gemm_attention, "MAX_SCORE_ELEMS", 64)  # many row chunks in the GEMM
    q, pk, pv, sk, sv = _make(7, 3, 10, 2, 3, 16, [5, 2, 4], [6, 2, 9])
    for plain in (False, True):
        with _path(plain):
            got = shared_prefix_prefill(q, pk, pv, sk, sv, scale=0.3)
        assert _max_err(got, reference_attention(q, pk, pv, sk, sv, scale=0.3)) <= TOL


def test_lengths_as_python_lists():
    q, pk, pv, sk, sv = _make(11, 3, 6, 1, 4, 8, [2, 1, 3], [4, 1, 3])
    qp, _ = pad_ragged(q)
    skp, _ = pad_ragged(sk)
    svp, _ = pad_ragged(sv)
    out = shared_prefix_prefill(qp, pk, pv, skp, svp, [4, 1, 3], [2, 1, 3])
    got = [out[i, :t] for i, t in enumerate([2, 1, 3])]
    assert _max_err(got, reference_attention(q, pk, pv, sk, sv)) <= TOL


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs(dtype):
    q, pk, pv, sk, sv = _make(5, 4, 33, 2, 3, 32, [1] * 4, [3, 0, 7, 1], dtype)
    out = shared_prefix_decode(torch.cat(q), pk, pv, sk, sv)
    assert out.dtype == dtype
    assert _max_err(out.unsqueeze(1), reference_attention(q, pk, pv, sk, sv)) <= 2e-2


def test_shape_errors():
    q, pk, pv, sk, sv = _make(0, 2, 4, 2, 2, 8, [1, 1], [1, 2])
    qd = torch.cat(q)
    with pytest.raises(ValueError, match="multiple"):
        shared_prefix_decode(qd[:, :3], pk, pv, sk, sv)
    with pytest.raises(ValueError, match="head_dim"):
        shared_prefix_decode(qd[..., :4], pk, pv, sk, sv)
    with pytest.raises(ValueError, match="differ"):
        shared_prefix_decode(qd, pk, pv[:3], sk, sv)
    with pytest.raises(ValueError, match="requests"):
        shared_prefix_decode(qd, pk, pv, sk[:1], sv[:1])
    with pytest.raises(ValueError, match="lengths"):
        shared_prefix_decode(qd, pk, pv, sk, sv, [1, 2])
    skp, _ = pad_ragged(sk)
    with pytest.raises(ValueError, match="lengths"):
        shared_prefix_decode(qd, pk, pv, skp, skp, [1, 2, 3])


# ---- grouping --------------------------------------------------------------------------------


def test_grouping_basic():
    a, b = object(), "node-b"
    plan = plan_shared_prefix(
        [(a, 100), None, (b, 80), (a, 100), (b, 80), (b, 80), ("lonely", 500)]
    )
    assert plan == BatchPlan(
        groups=(PrefixGroup(a, 100, (0, 3)), PrefixGroup(b, 80, (2, 4, 5))), singles=(1, 6)
    )


def test_grouping_thresholds():
    refs = [("x", 10), ("x", 10), ("y", 64), ("y", 64), ("y", 64)]
    plan = plan_shared_prefix(refs)  # default min_prefix_len skips the short prefix
    assert [g.node for g in plan.groups] == ["y"] and plan.singles == (0, 1)
    plan = plan_shared_prefix(refs, min_prefix_len=1)
    assert [g.node for g in plan.groups] == ["x", "y"] and plan.singles == ()
    plan = plan_shared_prefix(refs, min_group_size=3, min_prefix_len=1)
    assert [g.members for g in plan.groups] == [(2, 3, 4)] and plan.singles == (0, 1)
    assert plan_shared_prefix([("z", 0), ("z", 0)], min_prefix_len=0).groups[0].prefix_len == 0


def test_grouping_edge_cases():
    assert plan_shared_prefix([]) == BatchPlan((), ())
    assert plan_shared_prefix([None, None]) == BatchPlan((), (0, 1))
    with pytest.raises(ValueError, match="lengths"):
        plan_shared_prefix([("n", 100), ("n", 120)])
    with pytest.raises(ValueError, match="negative"):
        plan_shared_prefix([("n", -1)])
    with pytest.raises(ValueError, match="2 members"):
        plan_shared_prefix([("n", 100)], min_group_size=1)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.integers(0, 4)), max_size=30),
    st.integers(2, 4),
    st.integers(0, 3),
)
def test_grouping_partitions_the_batch(nodes, min_size, min_len):
    refs = [None if n is None else (n, n) for n in nodes]  # length = node id: consistent
    plan = plan_shared_prefix(refs, min_group_size=min_size, min_prefix_len=min_len)
    seen = [i for grp in plan.groups for i in grp.members] + list(plan.singles)
    assert sorted(seen) == list(range(len(refs)))
    for grp in plan.groups:
        assert len(grp.members) >= min_size and grp.prefix_len >= min_len
        assert all(refs[i] == (grp.node, grp.prefix_len) for i in grp.members)
        assert list(grp.members) == sorted(grp.members)
    for node in {n for n in nodes if n is not None}:  # a node is grouped whole or not at all
        idx = [i for i, n in enumerate(nodes) if n == node]
        grouped = any(grp.node == node for grp in plan.groups)
        assert grouped == (len(idx) >= min_size and node >= min_len)
