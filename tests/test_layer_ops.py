"""parrot_kernels.layer_ops: the compiled RMSNorm, residual add + RMSNorm, in-place RoPE and
SiLU-gate against the same functions' torch path, and the inputs the torch path keeps."""

from __future__ import annotations

from unittest.mock import patch

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from parrot_kernels import cpu_ops, layer_ops


def torch_path(fn, *args):
    """fn's torch path: run as if the extension had not been loaded."""
    with patch.object(cpu_ops.EXTENSION, "module", None):
        return fn(*args)


@pytest.fixture(scope="module", autouse=True)
def ext():
    if not cpu_ops.load():
        pytest.skip(f"extension unavailable: {cpu_ops.unavailable_reason()}")


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 9), d=st.sampled_from([8, 64, 576]), seed=st.integers(0, 2**16))
def test_norms_match_the_torch_path(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    x, delta, w = (
        torch.randn(n, d, generator=g) * 30,
        torch.randn(n, d, generator=g),
        torch.randn(d),
    )
    want = torch_path(layer_ops.rms_norm, x, w, 1e-5)
    assert torch.allclose(layer_ops.rms_norm(x, w, 1e-5), want, rtol=1e-5, atol=1e-5)
    total, normed = layer_ops.add_rms_norm(x, delta, w, 1e-5)
    want_total, want_normed = torch_path(layer_ops.add_rms_norm, x, delta, w, 1e-5)
    assert torch.equal(total, want_total)
    assert torch.allclose(normed, want_normed, rtol=1e-5, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 9), heads=st.integers(1, 12), extra=st.integers(0, 3), seed=st.integers(0, 99)
)
def test_rope_rotates_the_leading_heads_in_place_like_the_torch_path(n, heads, extra, seed):
    g = torch.Generator().manual_seed(seed)
    hd = 64
    qkv = torch.randn(n, (heads + extra) * hd, generator=g)
    angles = torch.rand(n, hd // 2, generator=g) * 100
    table = torch.stack([angles.cos(), angles.sin()], dim=1)  # [N, 2, hd/2]
    compiled, reference = qkv.clone(), qkv.clone()
    layer_ops.rope_(compiled, table, heads, hd)
    torch_path(layer_ops.rope_, reference, table, heads, hd)
    assert torch.allclose(compiled, reference, atol=1e-5)
    assert torch.equal(compiled[:, heads * hd :], qkv[:, heads * hd :])  # the rest untouched
    assert not torch.equal(compiled, qkv)


# Scalar: the compiled loop below 8 rows, then torch's SiLU; AVX2: the vector loop throughout
# (widths 96 and 100: with and without a tail of fewer than eight values).
@pytest.mark.parametrize("rows", [1, 7, 8, 40])
@pytest.mark.parametrize("width", [96, 100])
def test_silu_mul_matches_the_torch_path_on_every_vector_path(rows, width):
    gate_up = torch.randn(rows, 2 * width) * 8
    gate_up[0, :4] = torch.tensor([-120.0, -90.0, 90.0, 120.0])  # past exp's clamps
    want = torch_path(layer_ops.silu_mul, gate_up)
    module = cpu_ops.module()
    try:
        for path in ("scalar", module.set_isa("best")):
            assert module.set_isa(path) == path
            assert torch.allclose(layer_ops.silu_mul(gate_up), want, atol=1e-5), path
    finally:
        module.set_isa("best")


def test_other_dtypes_and_layouts_take_the_torch_path():
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    w = torch.ones(64, dtype=torch.bfloat16)
    assert layer_ops.rms_norm(x, w, 1e-5).dtype == torch.bfloat16
    strided = torch.randn(64, 4).t()  # not contiguous
    assert torch.allclose(layer_ops.silu_mul(strided), layer_ops.silu_mul(strided.contiguous()))


def test_bad_shapes_are_value_errors():
    module = cpu_ops.module()
    with pytest.raises(ValueError, match="weight must be float32"):
        module.rms_norm(torch.randn(2, 8), torch.randn(7), 1e-5)
    with pytest.raises(ValueError, match="do not fit"):
        module.rope_(torch.randn(2, 64), torch.randn(2, 2, 32), 2, 64)
    with pytest.raises(ValueError, match=r"cos/sin table"):
        module.rope_(torch.randn(2, 128), torch.randn(3, 2, 32), 2, 64)
