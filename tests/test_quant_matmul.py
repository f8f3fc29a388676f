"""parrot_kernels.quant_matmul: GGML blocks made by the `gguf` library, dequantised by our torch
reference and by the compiled extension (every vector path this CPU has), and multiplied by the
block kernel, against the `gguf` library's own dequantisation."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize
from hypothesis import given, settings
from hypothesis import strategies as st

from parrot_kernels import cpu_ops, quant_matmul
from parrot_kernels.quant_matmul import BlockType


@pytest.fixture(scope="module")
def ext():
    if not cpu_ops.load():
        pytest.skip(f"extension unavailable: {cpu_ops.unavailable_reason()}")
    return cpu_ops.module()


def _paths(module) -> list[str]:
    """The vector paths this CPU can run, slowest first."""
    best = module.set_isa("best")
    order = ["scalar", "avx2", "avx512"]
    return order[: order.index(best) + 1]


def _blocks(kind: BlockType, rows: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random weights quantised by the gguf library: (blocks in the kernels' layout, gguf's own
    dequantisation)."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((rows, k)) * rng.uniform(0.01, 3)).astype(np.float32)
    w += rng.uniform(-1, 1, (rows, 1)).astype(np.float32)  # offsets, which Q4_1 stores apart
    blocks = gguf_quantize(w, gguf.GGMLQuantizationType(int(kind)))
    exact = gguf_dequantize(blocks, gguf.GGMLQuantizationType(int(kind)))
    packed = quant_matmul.from_gguf(torch.from_numpy(blocks), kind, k)
    return packed, torch.from_numpy(exact.astype(np.float32))


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(list(BlockType)),
    rows=st.integers(1, 40),
    nblocks=st.integers(1, 8),
    seed=st.integers(0, 2**16),
)
def test_torch_dequantisation_equals_gguf(kind, rows, nblocks, seed):
    blocks, exact = _blocks(kind, rows, 32 * nblocks, seed)
    assert torch.equal(quant_matmul.dequantize_reference(blocks, kind, 32 * nblocks), exact)


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(list(BlockType)),
    rows=st.integers(1, 70),
    nblocks=st.integers(1, 6),
    n=st.integers(1, quant_matmul.DENSE_ROWS - 1),
    seed=st.integers(0, 2**16),
)
def test_block_kernel_matches_dense_product_on_every_path(ext, kind, rows, nblocks, n, seed):
    k = 32 * nblocks
    blocks, exact = _blocks(kind, rows, k, seed)
    x = torch.randn(n, k, generator=torch.Generator().manual_seed(seed))
    x[:, 0] *= 50  # an outlier, as real activations have
    want = x.double() @ exact.double().T
    scale = x.abs().double() @ exact.abs().double().T  # the size fp32 rounding errs relative to
    try:
        for path in _paths(ext):
            assert ext.set_isa(path) == path
            assert torch.equal(quant_matmul.dequantize(blocks, kind, k), exact), path
            got = quant_matmul.linear(x, blocks, kind, k).double()
            assert got.shape == (n, rows)
            assert ((got - want).abs() <= 1e-5 * scale + 1e-6).all(), path
    finally:
        ext.set_isa("best")


def test_many_rows_take_the_dense_gemm_with_the_same_result(ext):
    blocks, exact = _blocks(BlockType.Q4_1, 64, 128, 3)
    small, small_exact = _blocks(BlockType.Q8_0, 16, 64, 4)
    x = torch.randn(3, quant_matmul.DENSE_ROWS, 128)  # leading dims are flattened
    got = quant_matmul.linear(x, blocks, BlockType.Q4_1, 128, bias=torch.ones(64))
    # The dense path reuses one scratch buffer per thread: a second weight must not show
    # through the first result, nor the first's values through the second.
    x2 = torch.randn(quant_matmul.DENSE_ROWS, 64)
    got2 = quant_matmul.linear(x2, small, BlockType.Q8_0, 64)
    assert got.shape == (3, quant_matmul.DENSE_ROWS, 64)
    assert torch.allclose(got, x @ exact.T + 1, atol=1e-4)
    assert torch.allclose(got2, x2 @ small_exact.T, atol=1e-4)


def test_without_the_extension_the_torch_path_gives_the_same(monkeypatch, ext):
    blocks, exact = _blocks(BlockType.Q8_0, 16, 64, 5)
    x = torch.randn(2, 64)
    compiled = quant_matmul.linear(x, blocks, BlockType.Q8_0, 64)
    monkeypatch.setattr(cpu_ops.EXTENSION, "module", None)
    assert not cpu_ops.loaded()
    assert torch.allclose(quant_matmul.linear(x, blocks, BlockType.Q8_0, 64), compiled, atol=1e-4)
    assert torch.equal(quant_matmul.dequantize(blocks, BlockType.Q8_0, 64), exact)


def test_bad_shapes_are_value_errors(ext):
    blocks, _ = _blocks(BlockType.Q4_0, 4, 64, 0)
    with pytest.raises(ValueError, match="multiple of 32"):
        quant_matmul.dequantize_reference(blocks, BlockType.Q4_0, 48)
    with pytest.raises(ValueError, match="take 18"):
        quant_matmul.dequantize_reference(blocks, BlockType.Q4_0, 32)
    with pytest.raises(ValueError, match="uint8"):
        quant_matmul.dequantize_reference(blocks.float(), BlockType.Q4_0, 64)
    # The compiled path checks for itself (a wrong call from C++ must not read out of bounds).
    with pytest.raises(ValueError, match="take 18"):
        ext.matmul(torch.randn(1, 32), blocks, int(BlockType.Q4_0), 32)
    with pytest.raises(ValueError, match="64 columns"):
        ext.matmul(torch.randn(1, 32), blocks, int(BlockType.Q4_0), 64)
    with pytest.raises(ValueError, match="unsupported GGML block type"):
        ext.dequantize(blocks, 12, 64)
