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


def build(n, w, positions, block_rows, target, vnni, requantize=False):
    t = int8_block_tables(w, block_rows, unroll=1)                # any number of quads
    f = int8_block_sparse_conv2d_1x1_x86(n, w.shape[1], positions, w.shape[0], t.col.shape[0], block_rows, t.quads,
                                         vnni, requantize)
    return tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=target,
                       tir_pipeline=tir_pipeline(target)), t


def weight(rows, cols, block_rows, vnni):
    """Block-punched int8 codes: the full int8 range on VNNI, at most 64 on AVX2 (both extremes in)."""
    w = block_weight(rows, cols, block_rows)
    return (w if vnni else np.clip(w, -64, 64)).astype("int8")


CASES = [
    (1, 21, 75, 50, 8),      # rows not a multiple of the block, channels not of 4, positions not of a tile
    (2, 50, 130, 33, 4),     # batch 2, two vectors a tile (VNNI: fewer than R x V = 16 accumulators)
    (1, 8, 9, 32, 8),        # one block, one tile
    (1, 16, 16, 300, 8),     # one quad a block: several position tiles a task, the last one overlapping
    (1, 40, 64, 49, 16),     # 7x7 positions, blocks of 16 rows (VNNI only)
]


@pytest.mark.parametrize("vnni,n,rows,cols,positions,block_rows",
                         [(vnni, *case) for vnni in (True, False) for case in CASES if vnni or case[-1] != 16])
def test_the_int8_1x1_kernel_is_bit_exact(vnni, n, rows, cols, positions, block_rows):
    (require_vnni if vnni else require_avx2)()
    rng = np.random.default_rng(2)
    w = weight(rows, cols, block_rows, vnni)
    ex, t = build(n, w, positions, block_rows, HOST, vnni)
    x = rng.integers(0, 256, (n, cols, positions)).astype("uint8")
    x[0, :, 0] = 255
    bias = rng.integers(-10**6, 10**6, t.col.shape[0] * block_rows).astype("int32")
    out = tvm.runtime.tensor(np.zeros((n, rows, positions), "int32"))
    ex["main"](*(tvm.runtime.tensor(a) for a in (x, t.col, t.value, bias)), out)
    expected = np.einsum("fc,ncp->nfp", w.astype(np.int64), x.astype(np.int64)) + bias[:rows, None]
    np.testing.assert_array_equal(out.numpy(), expected)


@pytest.mark.parametrize("vnni,lowest", [(True, 7), (False, 0)], ids=["vnni-relu", "avx2-no-relu"])
def test_the_requantizing_1x1_kernel_writes_the_next_layers_codes_of_its_sums(vnni, lowest):
    (require_vnni if vnni else require_avx2)()
    n, rows, cols, positions, R = 2, 21, 75, 50, 8
    rng = np.random.default_rng(3)
    w = weight(rows, cols, R, vnni)
    ex, t = build(n, w, positions, R, HOST, vnni, requantize=True)
    x = rng.integers(0, 256, (n, cols, positions)).astype("uint8")
    bias = np.zeros(t.col.shape[0] * R, "int32")
    scale = np.zeros((t.col.shape[0] * R, 2), "float32")
    scale[:rows, 0] = rng.uniform(2e-4, 6e-4, rows)
    scale[:rows, 1] = rng.uniform(-1, 1, rows)
    grid = np.array([20.0, 7, lowest], "float32")                    # next scale 0.05, zero point 7
    out = tvm.runtime.tensor(np.zeros((n, rows, positions), "uint8"))
    ex["main"](*(tvm.runtime.tensor(a) for a in (x, t.col, t.value, bias, scale, grid)), out)
    sums = np.einsum("fc,ncp->nfp", w.astype(np.int64), x.astype(np.int64))
    expected = requantized_reference(sums[..., None], scale[:rows], grid)[..., 0]
    assert (expected == lowest).any() and (expected == 255).any() and (expected > lowest).mean() > 0.2
    np.testing.assert_array_equal(out.numpy(), expected)


def test_the_vnni_hot_loop_interleaves_four_channels_and_feeds_each_to_every_row():
    w = weight(64, 256, 8, True)
    asm = build(1, w, 64, 8, VNNI, True)[0].mod.inspect_source("asm")
    loop = asm.split("vpdpbusd", 1)[0].rsplit("\n.LBB", 1)[1] + asm.split("vpdpbusd", 1)[1].split("jne", 1)[0]
    assert loop.count("vpmovzxbd") == 8 and loop.count("vpdpbusd") + 1 == 16 and "zmm" in loop
    assert "%rsp" not in loop


def test_the_avx2_hot_loop_interleaves_four_channels_and_multiplies_each_row_without_spilling():
    w = weight(64, 256, 8, False)
    asm = build(1, w, 64, 8, AVX2, False)[0].mod.inspect_source("asm")
    loop = asm.split("vpmaddubsw", 1)[0].rsplit("\n.LBB", 1)[1] + asm.split("vpmaddubsw", 1)[1].split("jne", 1)[0]
    assert loop.count("vpmovzxbd") == 4 and loop.count("vpmaddubsw") + 1 == 8 and loop.count("vpmaddwd") == 8
    assert "%rsp" not in loop and "zmm" not in asm


def test_refusals_say_what_the_kernel_runs():
    with pytest.raises(NotImplementedError, match=r"on AVX2 runs blocks of \(4, 8\) rows, not 16"):
        int8_block_sparse_conv2d_1x1_x86(1, 16, 64, 16, 1, 16, 4, vnni=False)
    with pytest.raises(NotImplementedError, match=r"runs blocks of \(4, 8, 16\) rows, not 2"):
        int8_block_sparse_conv2d_1x1_x86(1, 16, 64, 16, 8, 2, 4, vnni=True)
    with pytest.raises(ValueError, match="12 positions: the int8 1x1 kernel takes at least 16"):
        int8_block_sparse_conv2d_1x1_x86(1, 16, 12, 16, 2, 8, 4, vnni=True)
