"""Int8 block-punched 1x1 conv on x86 with AVX2: a lane per output position, its 4 bytes 4 kept input
channels of the block interleaved from 4 channel rows in registers, a row's 4 weights broadcast;
bit-exact against the same integer arithmetic."""
import numpy as np
import pytest
import tvm

from schedules.int8_block_sparse_conv2d_1x1_avx2 import int8_block_sparse_conv2d_1x1_avx2, tile_positions
from tvm_patterns.passes.register_tiles import tir_pipeline
from tvm_patterns.sparsity.int8_block import int8_block_tables

from .test_int8_block_sparse_dense import block_weight
from .test_int8_filter_block_conv import HOST
from .test_int8_filter_block_conv_avx2 import AVX2, require_avx2


def build(n, w, positions, block_rows, target):
    t = int8_block_tables(w, block_rows, unroll=1)                # any number of quads
    f = int8_block_sparse_conv2d_1x1_avx2(n, w.shape[1], positions, w.shape[0], t.col.shape[0], block_rows, t.quads)
    return tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=target,
                       tir_pipeline=tir_pipeline(target)), t


@pytest.mark.parametrize("n,rows,cols,positions,block_rows", [
    (1, 21, 75, 50, 8),      # rows not a multiple of the block, channels not of 4, positions not of 8
    (2, 50, 130, 33, 4),     # batch 2, two vectors a tile
    (1, 8, 9, 8, 8),         # one block, one tile
    (1, 16, 16, 300, 8),     # one quad a block: several position tiles a task, the last one short
])
def test_the_int8_1x1_kernel_is_bit_exact(n, rows, cols, positions, block_rows):
    require_avx2()
    rng = np.random.default_rng(2)
    w = np.clip(block_weight(rows, cols, block_rows), -64, 64).astype("int8")   # both extremes in
    padded = -(-positions // tile_positions(block_rows)) * tile_positions(block_rows)
    ex, t = build(n, w, padded, block_rows, HOST)
    x = rng.integers(0, 256, (n, cols, padded)).astype("uint8")
    x[0, :, 0] = 255
    bias = rng.integers(-10**6, 10**6, t.col.shape[0] * block_rows).astype("int32")
    out = tvm.runtime.tensor(np.zeros((n, rows, padded), "int32"))
    ex["main"](*(tvm.runtime.tensor(a) for a in (x, t.col, t.value, bias)), out)
    expected = np.einsum("fc,ncp->nfp", w.astype(np.int64), x.astype(np.int64)) + bias[:rows, None]
    np.testing.assert_array_equal(out.numpy(), expected)


def test_the_hot_loop_interleaves_four_channels_and_multiplies_each_row_without_spilling():
    w = np.clip(block_weight(64, 256, 8), -64, 64).astype("int8")
    asm = build(1, w, 64, 8, AVX2)[0].mod.inspect_source("asm")
    loop = asm.split("vpmaddubsw", 1)[0].rsplit("\n.LBB", 1)[1] + asm.split("vpmaddubsw", 1)[1].split("jne", 1)[0]
    assert loop.count("vpmovzxbd") == 4 and loop.count("vpmaddubsw") + 1 == 8 and loop.count("vpmaddwd") == 8
    assert "%rsp" not in loop and "zmm" not in asm


def test_refusals_say_what_the_kernel_runs():
    with pytest.raises(NotImplementedError, match=r"blocks of \(4, 8\) rows, not 16"):
        int8_block_sparse_conv2d_1x1_avx2(1, 16, 64, 16, 1, 16, 4)
    with pytest.raises(ValueError, match="60 positions: the int8 1x1 kernel takes a multiple of 8"):
        int8_block_sparse_conv2d_1x1_avx2(1, 16, 60, 16, 2, 8, 4)
