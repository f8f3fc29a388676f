"""parrot_kernels.prefill_attention: the compiled causal attention of a prompt chunk over its
history (a cached prefix, then the chunk; GQA) against an fp64 reference, the same numbers for a
row however the prompt was chunked, and its input checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from parrot_kernels import cpu_ops
from parrot_kernels.prefill_attention import prefill_attention

TOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def ext():
    if not cpu_ops.load():
        pytest.skip(f"extension unavailable: {cpu_ops.unavailable_reason()}")
    if cpu_ops.module().isa() == "scalar":
        pytest.skip("the prefill kernel needs AVX2")


def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """fp64: query i (position L - n + i) over keys 0 .. L - n + i, query head h over key head
    h // group."""
    n, L = q.shape[0], k.shape[0]
    group = q.shape[1] // k.shape[1]
    visible = torch.arange(L)[None, :] <= torch.arange(L - n, L)[:, None]
    q64, k64, v64 = (t.double().transpose(0, 1) for t in (q, k, v))
    k64, v64 = (t.repeat_interleave(group, 0) for t in (k64, v64))
    out = F.scaled_dot_product_attention(q64, k64, v64, attn_mask=visible)
    return out.transpose(0, 1)


def _inputs(n: int, prefix: int, hkv: int, group: int, d: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    L = n + prefix
    return (
        torch.randn(n, hkv * group, d, generator=g),
        torch.randn(L, hkv, d, generator=g) * 3,
        torch.randn(L, hkv, d, generator=g),
    )


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 40),
    prefix=st.integers(0, 60),
    hkv=st.sampled_from([1, 3]),
    group=st.sampled_from([1, 3, 4]),
    d=st.sampled_from([8, 64, 72]),
    seed=st.integers(0, 2**16),
)
def test_matches_the_reference(n, prefix, hkv, group, d, seed):
    q, k, v = _inputs(n, prefix, hkv, group, d, seed)
    got = prefill_attention(q, k, v)
    assert got is not None and got.shape == q.shape
    assert (got.double() - _reference(q, k, v)).abs().max().item() <= TOL


def test_a_long_history_matches_the_reference():
    q, k, v = _inputs(130, 700, 3, 3, 64, seed=1)
    got = prefill_attention(q, k, v)
    assert (got.double() - _reference(q, k, v)).abs().max().item() <= TOL


def test_a_row_gets_the_same_numbers_however_the_prompt_was_chunked():
    q, k, v = _inputs(150, 0, 3, 3, 64, seed=2)
    whole = prefill_attention(q, k, v)
    for cut in (1, 7, 64, 100):
        first = prefill_attention(q[:cut], k[:cut], v[:cut])
        rest = prefill_attention(q[cut:], k, v)  # the first part now a cached prefix
        assert torch.equal(torch.cat([first, rest]), whole), cut


def test_what_the_kernel_does_not_take_is_left_to_the_caller():
    q, k, v = _inputs(4, 2, 1, 2, 36, seed=3)  # a head size not a multiple of 8
    assert prefill_attention(q, k, v) is None
    q, k, v = _inputs(4, 2, 1, 2, 64, seed=3)
    assert prefill_attention(q.bfloat16(), k, v) is None
    module = cpu_ops.module()
    try:
        assert module.set_isa("scalar") == "scalar"
        assert prefill_attention(q, k, v) is None
    finally:
        module.set_isa("best")


def test_bad_shapes_are_value_errors():
    q, k, v = _inputs(4, 0, 1, 2, 8, seed=4)
    with pytest.raises(ValueError, match="last of the L keys"):
        prefill_attention(torch.randn(5, 2, 8), k, v)  # more queries than keys
    with pytest.raises(ValueError, match="multiple"):
        prefill_attention(torch.randn(4, 3, 8), torch.randn(4, 2, 8), torch.randn(4, 2, 8))
    with pytest.raises(ValueError, match="contiguous float32"):
        prefill_attention(q, k, v[:3])
