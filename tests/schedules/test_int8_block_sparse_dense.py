"""Int8 block-punched linear layer on x86 (AVX-512 VNNI, or AVX2 with weights of at most 64): a lane per
row of a block, 4 kept columns a lane's bytes, the 4 input codes gathered once and broadcast;
bit-exact against the same integer arithmetic."""
import numpy as np
import pytest
import tvm

from schedules.int8_block_sparse_dense_x86 import int8_block_sparse_dense_x86
from tvm_patterns.passes.register_tiles import tir_pipeline
from tvm_patterns.sparsity.block import project_block_punched
from tvm_patterns.sparsity.int8_block import UNROLL, int8_block_tables, nibble_tables

from .test_int8_filter_block_conv import HOST, VNNI, require_vnni
from .test_int8_filter_block_conv_avx2 import AVX2, require_avx2


def block_weight(rows, cols, block_rows, sparsity=0.6, seed=0):
    w = np.random.default_rng(seed).integers(-128, 128, (rows, cols)).astype("float32")
    return project_block_punched(w, block_rows, sparsity).astype("int8")


POW2_CODES = np.array([0, 1, 2, 4, 8, 16, 32, 64, -1, -2, -4, -8, -16, -32, -64], "int8")   # 4-bit pow2


def build(m, w, block_rows, target, nibbles=False, avx2=False):
    t = int8_block_tables(w, block_rows)
    t = nibble_tables(t) if nibbles else t
    f = int8_block_sparse_dense_x86(m, w.shape[1], w.shape[0], t.col.shape[0], block_rows, t.quads, nibbles, avx2)
    return tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=target,
                       tir_pipeline=tir_pipeline(target)), t


@pytest.mark.parametrize("nibbles", [False, True])
@pytest.mark.parametrize("isa,m,rows,cols,block_rows", [
    ("vnni", 1, 21, 75, 8),       # rows not a multiple of the block, columns not of 4
    ("vnni", 3, 32, 130, 4),      # batch 3, xmm lanes
    ("vnni", 2, 50, 64, 16),      # zmm lanes, a short last block
    ("avx2", 1, 21, 75, 8),       # ymm lanes
    ("avx2", 3, 30, 130, 4),      # batch 3, xmm lanes, a short last block
])
def test_the_int8_block_kernel_is_bit_exact(isa, m, rows, cols, block_rows, nibbles):
    (require_vnni if isa == "vnni" else require_avx2)()
    rng = np.random.default_rng(1)
    w = block_weight(rows, cols, block_rows)
    if nibbles:                                                  # 15 codes: two a byte
        w = np.where(w != 0, POW2_CODES[np.abs(w.astype(np.int64)) % 14 + 1], 0).astype("int8")
    elif isa == "avx2":                                          # codes of at most 64, both extremes
        w = np.clip(w, -64, 64).astype("int8")
    ex, t = build(m, w, block_rows, HOST, nibbles, avx2=isa == "avx2")
    x = rng.integers(0, 256, (m, cols)).astype("uint8")        # every code, 0 and 255 included
    x[0, :2] = (0, 255)
    bias = rng.integers(-10**6, 10**6, t.col.shape[0] * block_rows).astype("int32")
    out = tvm.runtime.tensor(np.zeros((m, rows), "int32"))
    levels = t.levels if nibbles else np.zeros(16, "int8")
    ex["main"](*(tvm.runtime.tensor(a) for a in (x, t.col, t.value, levels, bias)), out)
    np.testing.assert_array_equal(out.numpy(), x.astype(np.int64) @ w.T.astype(np.int64) + bias[:rows])


def test_the_avx2_hot_loop_multiplies_with_vpmaddubsw_then_vpmaddwd():
    w = np.clip(block_weight(64, 512, 8), -64, 64).astype("int8")
    asm = build(1, w, 8, AVX2, avx2=True)[0].mod.inspect_source("asm")
    assert asm.count("vpmaddubsw") >= UNROLL and asm.count("vpmaddwd") >= UNROLL
    assert "vpdpbusd" not in asm and "zmm" not in asm


@pytest.mark.parametrize("nibbles", [False, True])
def test_the_hot_loop_multiplies_with_vpdpbusd_without_spilling(nibbles):
    w = block_weight(64, 512, 8)
    w = np.sign(w).astype("int8") if nibbles else w
    ex, _ = build(1, w, 8, VNNI, nibbles)
    asm = ex.mod.inspect_source("asm")
    assert asm.count("vpdpbusd") >= UNROLL and "%rsp" not in asm.split("vpdpbusd", 1)[1].split("ret", 1)[0]
    assert ("vpshufb" in asm) == nibbles                            # the 4-bit codes decoded in registers


def test_nibble_tables_hold_two_codes_a_byte_when_the_weight_has_at_most_16():
    w = np.where(block_weight(8, 40, 8) != 0, POW2_CODES[np.arange(8 * 40).reshape(8, 40) % 15], 0).astype("int8")
    t = int8_block_tables(w, 8)
    n = nibble_tables(t)
    assert n.quads == t.quads and n.value.nbytes * 2 == t.value.nbytes
    index = n.value.view("uint8").reshape(1, t.quads // 2, 8, 4)
    decoded = np.stack([n.levels[index & 15], n.levels[index >> 4]], axis=2).reshape(t.value.shape + (4,))
    np.testing.assert_array_equal(decoded, t.value.view("int8").reshape(t.value.shape + (4,)))
    assert nibble_tables(int8_block_tables(block_weight(8, 40, 8), 8)) is None      # 8-bit codes: more than 16


def test_the_tables_hold_each_rows_four_weights_of_a_quad_in_one_int32():
    w = block_weight(8, 30, 8)
    t = int8_block_tables(w, 8)
    assert t.quads % UNROLL == 0 and t.col.dtype == np.uint16
    taps = t.value.view("int8").reshape(1, t.quads, 8, 4)                      # [B, Q, R, tap]
    kept = np.flatnonzero(np.abs(w).sum(axis=0))
    for j, c in enumerate(kept):
        assert t.col[0, j] == c
        np.testing.assert_array_equal(taps[0, j // 4, :, j % 4], w[:, c])
    assert not taps.reshape(-1, 8, 4).transpose(0, 2, 1).reshape(-1, 8)[len(kept):].any()   # padding weighs 0


def test_refusals_say_what_the_kernel_does_not_run():
    with pytest.raises(NotImplementedError, match="blocks of .4, 8, 16. rows, not 5"):
        int8_block_sparse_dense_x86(1, 10, 10, 2, 5, 4)
    with pytest.raises(NotImplementedError, match=r"\(AVX2\) runs blocks of \(4, 8\) rows, not 16"):
        int8_block_sparse_dense_x86(1, 10, 10, 2, 16, 4, avx2=True)
    with pytest.raises(NotImplementedError, match="indexes at most 65536"):
        int8_block_tables(np.zeros((8, 70000), "int8"), 8)
    with pytest.raises(ValueError, match="int8 block tables need an int8"):
        int8_block_tables(np.zeros((8, 16), "float32"), 8)
