"""Int8 block-punched 1x1 conv on x86 (AVX-512 VNNI, or AVX2): a lane per output position, its 4 bytes 4
kept input channels of the block interleaved from 4 channel rows in registers, a row's 4 weights
broadcast; bit-exact against the same integer arithmetic, its requantized codes too."""
import numpy as np
import pytest
import tvm

from schedules.int8_block_sparse_conv2d_1x1_x86 import int8_block_sparse_conv2d_1x1_x86
from tvm_patterns.passes.register_tiles import tir_pipeline
from tvm_patterns.sparsity.int8_block import int8_block_tables

from .test_int8_block_sparse_dense import block_weight
from .test_int8_filter_block_conv import HOST, require_vnni, requantized_reference
from .test_int8_filter_block_conv_avx2 import AVX2, require_avx2

VNNI = tvm.target.Target({"kind": "llvm", "mcpu": "icelake-server"})


def build(n, w, out_hw, block_rows, target, vnni, requantize=False):
    t = int8_block_tables(w, block_rows, unroll=1)                # any number of quads
    f = int8_block_sparse_conv2d_1x1_x86(n, w.shape[1], out_hw, w.shape[0], t.col.shape[0], block_rows, t.quads,
                                         vnni, requantize)
    return tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=target,
                       tir_pipeline=tir_pipeline(target)), t


def weight(rows, cols, block_rows, vnni):
    """Block-punched int8 codes: the full int8 range on VNNI, at most 64 on AVX2 (both extremes in)."""
    w = block_weight(rows, cols, block_rows)
    return (w if vnni else np.clip(w, -64, 64)).astype("int8")


CASES = [
    (1, 21, 75, (5, 10), 8),     # rows not a multiple of the block, channels not of 4, positions not of a tile
    (2, 50, 130, (3, 11), 4),    # batch 2, two vectors a tile (VNNI: fewer than R x V = 16 accumulators)
    (1, 8, 9, (4, 8), 8),        # one block, one tile
    (1, 16, 16, (15, 20), 8),    # one quad a block: several position tiles a task, the last one overlapping
    (1, 40, 64, (7, 7), 16),     # 7x7 positions, blocks of 16 rows (VNNI only)
]


@pytest.mark.parametrize("vnni,n,rows,cols,out_hw,block_rows",
                         [(vnni, *case) for vnni in (True, False) for case in CASES if vnni or case[-1] != 16])
def test_the_int8_1x1_kernel_is_bit_exact(vnni, n, rows, cols, out_hw, block_rows):
    (require_vnni if vnni else require_avx2)()
    rng = np.random.default_rng(2)
    w = weight(rows, cols, block_rows, vnni)
    ex, t = build(n, w, out_hw, block_rows, HOST, vnni)
    x = rng.integers(0, 256, (n, cols, *out_hw)).astype("uint8")
    x[0, :, 0, 0] = 255
    bias = rng.integers(-10**6, 10**6, t.col.shape[0] * block_rows).astype("int32")
    out = tvm.runtime.tensor(np.zeros((n, rows, *out_hw), "int32"))
    ex["main"](*(tvm.runtime.tensor(a) for a in (x, t.col, t.value, bias)), out)
    expected = np.einsum("fc,nchw->nfhw", w.astype(np.int64), x.astype(np.int64)) + bias[:rows, None, None]
    np.testing.assert_array_equal(out.numpy(), expected)


@pytest.mark.parametrize("vnni,lowest", [(True, 7), (False, 0)], ids=["vnni-relu", "avx2-no-relu"])
def test_the_requantizing_1x1_kernel_writes_the_next_layers_codes_of_its_sums(vnni, lowest):
    (require_vnni if vnni else require_avx2)()
    n, rows, cols, out_hw, R = 2, 21, 75, (5, 10), 8
    rng = np.random.default_rng(3)
    w = weight(rows, cols, R, vnni)
    ex, t = build(n, w, out_hw, R, HOST, vnni, requantize=True)
    x = rng.integers(0, 256, (n, cols, *out_hw)).astype("uint8")
    bias = np.zeros(t.col.shape[0] * R, "int32")
    scale = np.zeros((t.col.shape[0] * R, 2), "float32")
    scale[:rows, 0] = rng.uniform(2e-4, 6e-4, rows)
    scale[:rows, 1] = rng.uniform(-1, 1, rows)
    grid = np.array([20.0, 7, lowest], "float32")                    # next scale 0.05, zero point 7
    out = tvm.runtime.tensor(np.zeros((n, rows, *out_hw), "uint8"))
    ex["main"](*(tvm.runtime.tensor(a) for a in (x, t.col, t.value, bias, scale, grid)), out)
    sums = np.einsum("fc,nchw->nfhw", w.astype(np.int64), x.astype(np.int64))
    expected = requantized_reference(sums, scale[:rows], grid)
    assert (expected == lowest).any() and (expected == 255).any() and (expected > lowest).mean() > 0.2
    np.testing.assert_array_equal(out.numpy(), expected)


def test_the_vnni_hot_loop_interleaves_four_channels_and_feeds_each_to_every_row():
    w = weight(64, 256, 8, True)
    asm = build(1, w, (8, 8), 8, VNNI, True)[0].mod.inspect_source("asm")
    loop = asm.split("vpdpbusd", 1)[0].rsplit("\n.LBB", 1)[1] + asm.split("vpdpbusd", 1)[1].split("jne", 1)[0]
    assert loop.count("vpmovzxbd") == 8 and loop.count("vpdpbusd") + 1 == 16 and "zmm" in loop
    assert "%rsp" not in loop


def test_the_avx2_hot_loop_interleaves_four_channels_and_multiplies_each_row_without_spilling():
    w = weight(64, 256, 8, False)
    asm = build(1, w, (8, 8), 8, AVX2, False)[0].mod.inspect_source("asm")
    loop = asm.split("vpmaddubsw", 1)[0].rsplit("\n.LBB", 1)[1] + asm.split("vpmaddubsw", 1)[1].split("jne", 1)[0]
    assert loop.count("vpmovzxbd") == 4 and loop.count("vpmaddubsw") + 1 == 8 and loop.count("vpmaddwd") == 8
    assert "%rsp" not in loop and "zmm" not in asm


def test_refusals_say_what_the_kernel_runs():
    with pytest.raises(NotImplementedError, match=r"on AVX2 runs blocks of \(4, 8\) rows, not 16"):
        int8_block_sparse_conv2d_1x1_x86(1, 16, (8, 8), 16, 1, 16, 4, vnni=False)
    with pytest.raises(NotImplementedError, match=r"runs blocks of \(4, 8, 16\) rows, not 2"):
        int8_block_sparse_conv2d_1x1_x86(1, 16, (8, 8), 16, 8, 2, 4, vnni=True)
    with pytest.raises(ValueError, match="12 positions: the int8 1x1 kernel takes at least 16"):
        int8_block_sparse_conv2d_1x1_x86(1, 16, (3, 4), 16, 2, 8, 4, vnni=True)


def fused_multiply_add(a, b, c):
    """float32 a * b + c rounded once, as LLVM contracts the float epilogue's multiply and add."""
    return (a.astype(np.float64) * b.astype(np.float64) + c.astype(np.float64)).astype(np.float32)


@pytest.mark.parametrize("vnni,residual,relu,out_float,codes", [
    (True, "float", True, True, True),       # a ResNet block's end, its sum needed in float and as codes
    (True, "float", False, True, False),
    (True, "codes", True, False, True),      # the sum kept as codes only: the next block's residual and input
    (False, "codes", True, True, False),     # AVX2
], ids=["vnni-float-both", "vnni-float-plain", "vnni-codes-codes", "avx2-codes-float"])
def test_the_residual_1x1_kernel_writes_the_float_epilogue_and_the_next_layers_codes(vnni, residual, relu, out_float,
                                                                                      codes):
    (require_vnni if vnni else require_avx2)()
    n, rows, cols, out_hw, R = 2, 21, 75, (5, 10), 8
    rng = np.random.default_rng(4)
    w = weight(rows, cols, R, vnni)
    t = int8_block_tables(w, R, unroll=1)
    f = int8_block_sparse_conv2d_1x1_x86(n, cols, out_hw, rows, t.col.shape[0], R, t.quads, vnni,
                                         residual=residual, relu=relu, out_float=out_float, codes=codes)
    ex = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=HOST,
                     tir_pipeline=tir_pipeline(HOST))
    full, one = (n, rows, *out_hw), (1,)
    x = rng.integers(0, 256, (n, cols, *out_hw)).astype("uint8")
    scale = np.zeros((t.col.shape[0] * R, 2), "float32")
    scale[:rows, 0] = rng.uniform(2e-5, 6e-5, rows)
    scale[:rows, 1] = rng.uniform(-1, 1, rows)
    res_codes = rng.integers(0, 256, full).astype("uint8")
    res_grid = np.array([0.02, 100], "float32")                      # residual scale 0.02, zero point 100
    res = ((res_codes.astype("float32") - res_grid[1]) * res_grid[0]) if residual == "codes" else \
        rng.normal(size=full).astype("float32")
    grid = np.array([20.0, 7], "float32")                            # next scale 0.05, zero point 7
    args = [tvm.runtime.tensor(a) for a in (
        x, t.col, t.value, np.zeros(t.col.shape[0] * R, "int32"), scale,
        res if residual == "float" else np.zeros(one, "float32"), res_codes if residual == "codes" else np.zeros(one, "uint8"),
        res_grid, grid, np.zeros(full if out_float else one, "float32"), np.zeros(full if codes else one, "uint8"))]
    ex["main"](*args)
    sums = np.einsum("fc,nchw->nfhw", w.astype(np.int64), x.astype(np.int64)).astype("float32")
    y = fused_multiply_add(sums, scale[:rows, 0, None, None], scale[:rows, 1, None, None]) + res
    y = np.maximum(y, np.float32(0)) if relu else y
    if out_float and residual == "float":
        np.testing.assert_array_equal(args[-2].numpy(), y)
    elif out_float:    # the residual's (code - zero point) * scale may contract into an FMA: a rounding apart
        np.testing.assert_allclose(args[-2].numpy(), y, rtol=1e-6, atol=1e-6)
    if codes:
        written = np.clip(np.floor(y * grid[0] + np.float32(0.5)) + grid[1], 0, 255).astype("uint8")
        assert (written == 7).any() and (written == 255).any() and ((written > 7) & (written < 255)).mean() > 0.2
        assert np.abs(args[-1].numpy().astype(int) - written).max() <= (0 if residual == "float" else 1)
        assert (args[-1].numpy() == written).mean() > 0.999


def test_the_residual_1x1_kernel_refuses_what_it_cannot_write():
    with pytest.raises(ValueError, match="requantized codes or a residual sum, not both"):
        int8_block_sparse_conv2d_1x1_x86(1, 16, (4, 8), 16, 2, 8, 4, True, requantize=True, residual="float")
    with pytest.raises(ValueError, match="nothing to write"):
        int8_block_sparse_conv2d_1x1_x86(1, 16, (4, 8), 16, 2, 8, 4, True, residual="codes", out_float=False)
