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
            allowed = 1e-5 * scale + 1e-6
            if path != "scalar" and n <= INT_ROWS:
                allowed += _int16_rounding(x, exact)
            assert ((got - want).abs() <= allowed).all(), path
    finally:
        ext.set_isa("best")


INT_ROWS = 2  # rows of x the vector paths multiply in 16-bit integers (kIntRows)


def _int16_rounding(x: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """[n, rows]: the most that rounding each 32-value block of x to 16-bit integers (a step of
    the block's largest magnitude / 32767) moves each dot: half a step times the weights' sum."""
    n, k = x.shape
    step = x.double().view(n, k // 32, 32).abs().amax(-1) / 32767
    weights = exact.double().abs().view(-1, k // 32, 32).sum(-1)
    return 0.5 * step @ weights.T * 1.001


@pytest.mark.parametrize("kind", list(BlockType))
@pytest.mark.parametrize("n", [1, 2])
def test_decode_rows_round_x_to_sixteen_bits_and_no_coarser(ext, kind, n):
    # A block of x with one large value and small others: its small values keep a 16-bit step
    # of the large one (8-bit steps would err by over ten times the bound), a block of zeros
    # stays zeros, and a NaN in x reaches every output it enters.
    k = 128
    blocks, exact = _blocks(kind, 24, k, 3)
    x = torch.randn(n, k, generator=torch.Generator().manual_seed(3))
    x[:, 0] = 1000.0
    x[:, 64:96] = 0.0
    want = x.double() @ exact.double().T
    try:
        for path in _paths(ext):
            ext.set_isa(path)
            err = (quant_matmul.linear(x, blocks, kind, k).double() - want).abs()
            bound = 1e-5 * (x.abs().double() @ exact.abs().double().T) + 1e-6
            assert (err <= bound + _int16_rounding(x, exact)).all(), path
            poisoned = x.clone()
            poisoned[-1, 5] = float("nan")
            out = quant_matmul.linear(poisoned, blocks, kind, k)
            assert out[-1].isnan().all(), path
            assert not out[:-1].isnan().any(), path
    finally:
        ext.set_isa("best")


@pytest.mark.parametrize("kind", list(BlockType))
def test_wide_inputs_give_each_row_the_numbers_it_gets_in_a_batch_of_eight(ext, kind):
    # Past 1024 inputs, eight rows of x no longer fit L1 and the kernel takes them four at a
    # time: the same arithmetic per row, so a row's result must not depend on its batch.
    k = 1536
    blocks, exact = _blocks(kind, 40, k, 7)
    x = torch.randn(19, k, generator=torch.Generator().manual_seed(7))
    try:
        for path in _paths(ext):
            assert ext.set_isa(path) == path
            many = quant_matmul.linear(x, blocks, kind, k)
            eights = torch.cat([quant_matmul.linear(x[i : i + 8], blocks, kind, k) for i in (0, 8)])
            assert torch.equal(many[:16], eights), path
            scale = x.abs().double() @ exact.abs().double().T
            err = (many.double() - x.double() @ exact.double().T).abs()
            assert (err <= 1e-5 * scale + 1e-6).all(), path
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


@settings(max_examples=20, deadline=None)
@given(kind=st.sampled_from(list(BlockType)), rows=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_dequantising_to_bfloat16_rounds_as_torch_on_every_path(ext, kind, rows, seed):
    blocks, exact = _blocks(kind, rows, 96, seed)
    want = exact.bfloat16()  # rounded to nearest even (equal values: -0.0 == 0.0)
    try:
        for path in _paths(ext):
            assert ext.set_isa(path) == path
            got = quant_matmul.dequantize(blocks, kind, 96, torch.bfloat16)
            assert got.dtype == torch.bfloat16
            assert torch.equal(got, want), path
    finally:
        ext.set_isa("best")
    assert torch.equal(quant_matmul.dequantize_reference(blocks, kind, 96).bfloat16(), want)


def test_the_dense_gemm_in_bfloat16_errs_by_its_rounding_only(ext):
    blocks, exact = _blocks(BlockType.Q4_1, 96, 256, 6)
    x = torch.randn(2, quant_matmul.DENSE_ROWS, 256)
    x[..., 0] *= 50  # an outlier, as real activations have
    bias = torch.randn(96)
    got = quant_matmul.linear(x, blocks, BlockType.Q4_1, 256, bias, torch.bfloat16)
    assert got.dtype == torch.float32 and got.shape == (2, quant_matmul.DENSE_ROWS, 96)
    want = x.double() @ exact.double().T + bias.double()
    scale = x.abs().double() @ exact.abs().double().T
    # Both operands rounded to 8 significant bits (relative 2^-9 each), the result too.
    assert ((got.double() - want).abs() <= 2**-7 * scale + 1e-3).all()
    # Fewer rows take the block kernel in fp32 whatever the dense type.
    few = x[0, :3]
    assert torch.equal(
        quant_matmul.linear(few, blocks, BlockType.Q4_1, 256, bias, torch.bfloat16),
        quant_matmul.linear(few, blocks, BlockType.Q4_1, 256, bias),
    )


def test_the_faster_dense_type_is_measured_once(ext):
    first = quant_matmul.fastest_dense_dtype()
    assert first in (torch.float32, torch.bfloat16)
    assert quant_matmul.fastest_dense_dtype() is first


def test_without_the_extension_the_torch_path_gives_the_same(monkeypatch, ext):
    blocks, exact = _blocks(BlockType.Q8_0, 16, 64, 5)
    x = torch.randn(2, 64)
    compiled = quant_matmul.linear(x, blocks, BlockType.Q8_0, 64)
    monkeypatch.setattr(cpu_ops.EXTENSION, "module", None)
    assert not cpu_ops.loaded()
    torch_path = quant_matmul.linear(x, blocks, BlockType.Q8_0, 64)
    assert ((torch_path - compiled).abs() <= 1e-4 + _int16_rounding(x, exact)).all()
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
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        ext.dequantize(blocks, int(BlockType.Q4_0), 64, torch.empty(4 * 64, dtype=torch.float16))
