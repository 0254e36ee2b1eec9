"""Int8 filter-block pattern conv on x86 with AVX2 only: 8 positions x 4 taps a ymm, each 128-bit lane
gathered by two vpshufb from two AVX2 row pairs, the taps summed by vpmaddubsw then vpmaddwd;
bit-exact against the same integer arithmetic while a tap pair's weights stay within 128."""
import numpy as np
import pytest
import tvm

from schedules.int8_filter_block_pattern_conv2d_rowpair_avx2 import (MAX_PAIR, Knobs, default_knobs,
                                                                      int8_filter_block_pattern_conv2d_rowpair_avx2,
                                                                      missing_features)
from tvm_patterns.passes.register_tiles import tir_pipeline
from tvm_patterns.sparsity.int8_filter_block import (int8_filter_block_tables, pack_rowpairs_avx2,
                                                     rowpair_avx2_shape, shuffle_index_avx2)

from .test_int8_filter_block_conv import HOST, LIB, int8_weight, reference

AVX2 = tvm.target.Target({"kind": "llvm", "mcpu": "znver3"})     # Zen 3: AVX2, no AVX-512


def require_avx2():
    missing = missing_features(HOST)
    if missing:
        pytest.skip(f"this CPU ({HOST.mcpu}) lacks {', '.join(missing)}")


def weight_7bit(K, C, filters, seed=0):
    """Codes in [-64, 64]: 64 itself included, the largest a pair may hold twice."""
    w = int8_weight(K, C, filters, seed=seed).astype(np.int64)
    return np.clip(np.round(w / 2), -64, 64).astype("int8")


def fma32(a, b, c):
    """float32 a * b + c rounded once (the float64 product of float32s is exact)."""
    return (np.float64(1) * np.asarray(a, np.float32) * np.asarray(b, np.float32) + np.asarray(c, np.float32)).astype(np.float32)


def build(shape, K, filters, tables, knobs, target=AVX2, requantize=False):
    N, C, H, W = shape
    B, L = tables.channel.shape
    f = int8_filter_block_pattern_conv2d_rowpair_avx2(N, C, H, W, K, B, filters, L, LIB.size, knobs, requantize)
    return tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=target,
                       tir_pipeline=tir_pipeline(target))


def inputs(shape, K, filters, knobs, zero_point, seed=0):
    N, C, H, W = shape
    rng = np.random.default_rng(seed)
    w = weight_7bit(K, C, filters, seed)
    w.reshape(-1)[np.flatnonzero(w)[:2]] = (64, -64)           # the extremes
    x = rng.integers(0, 256, shape).astype("uint8")
    x[0, 0, 0, :2] = (0, 255)
    bias = rng.integers(-5000, 5000, K).astype("int32")
    t = int8_filter_block_tables(w, LIB, filters)
    folded = np.zeros(t.channel.shape[0] * filters, "int32")
    folded[:K] = bias - zero_point * w.astype(np.int64).sum(axis=(1, 2, 3))
    arrays = (pack_rowpairs_avx2(x, zero_point, knobs.rows, knobs.groups), t.length, t.channel, t.pattern, t.value,
              shuffle_index_avx2(LIB), folded)
    return w, x, bias, t, arrays


@pytest.mark.parametrize("shape,K,filters,knobs,zero_point", [
    ((1, 16, 8, 16), 8, 4, Knobs(1, 1), 0),
    ((2, 13, 9, 37), 10, 4, Knobs(1, 2), 3),     # odd channels, a row tail, K not a multiple of F, batch 2
    ((1, 5, 7, 20), 6, 2, Knobs(2, 2), 128),     # rows past the output
    ((1, 24, 14, 14), 16, 4, None, 17),          # the default tile of a VGG-16 conv5 shape
])
def test_the_avx2_kernel_is_bit_exact_on_odd_shapes(shape, K, filters, knobs, zero_point):
    require_avx2()
    knobs = knobs or default_knobs(filters, shape[2], shape[3])
    w, x, bias, t, arrays = inputs(shape, K, filters, knobs, zero_point)
    out = tvm.runtime.tensor(np.zeros((shape[0], K, *shape[2:]), "int32"))
    build(shape, K, filters, t, knobs, HOST)["main"](*(tvm.runtime.tensor(a) for a in arrays), out)
    np.testing.assert_array_equal(out.numpy(), reference(x, w, bias, zero_point))


def test_the_requantizing_avx2_kernel_writes_the_codes_of_the_float_epilogue():
    require_avx2()
    shape, K, filters, knobs = (1, 6, 5, 19), 7, 4, Knobs(1, 2)
    w, x, bias, t, arrays = inputs(shape, K, filters, knobs, 9)
    B = t.channel.shape[0]
    scale = np.zeros((B * filters, 2), "float32")
    scale[:K, 0] = np.linspace(1e-3, 3e-3, K)
    scale[:K, 1] = np.linspace(-0.5, 0.5, K)
    grid = np.array([1 / 0.05, 11, 11], "float32")           # next scale 0.05, zero point 11, a ReLU
    out = tvm.runtime.tensor(np.zeros((1, K, 5, 19), "uint8"))
    build(shape, K, filters, t, knobs, HOST, requantize=True)["main"](
        *(tvm.runtime.tensor(a) for a in (*arrays, scale, grid)), out)
    # The float32 operations of the float epilogue and the next quantizer, each multiply-add one FMA
    # (LLVM contracts them on an FMA target, in those stages as in this write-back): rounded once
    sums = reference(x, w, bias, 9).astype(np.float64)              # the int32 sums
    y = fma32(sums, scale[:K, 0][None, :, None, None], scale[:K, 1][None, :, None, None])
    want = np.clip(np.floor(fma32(y, grid[0], 0.5)) + grid[1], grid[2], 255).astype("uint8")
    assert (want == 11).any() and (want == 255).any() and (want > 11).mean() > 0.2
    np.testing.assert_array_equal(out.numpy(), want)


def test_the_hot_loop_gathers_with_vpshufb_and_multiplies_with_vpmaddubsw_without_spilling():
    shape, K, filters = (1, 32, 28, 28), 32, 4
    knobs = default_knobs(filters, 28, 28)
    _, _, _, t, _ = inputs(shape, K, filters, knobs, 0)
    asm = build(shape, K, filters, t, knobs).mod.inspect_source("asm")
    loop = asm.split("vpmaddubsw", 1)[0].rsplit("\n.LBB", 1)[1] + asm.split("vpmaddubsw", 1)[1].split("jne", 1)[0]
    assert loop.count("vpmaddubsw") + 1 == filters * knobs.rows * knobs.groups
    assert loop.count("vpshufb") == 2 * knobs.rows * knobs.groups
    assert "zmm" not in asm and "vpdpbusd" not in asm                 # AVX2 only
    assert "%rsp" not in loop                                         # accumulators in registers


def test_the_row_pairs_hold_two_rows_of_six_columns_a_lane():
    x = np.arange(2 * 3 * 10, dtype="uint8").reshape(1, 2, 3, 10)
    pairs = pack_rowpairs_avx2(x, zero_point=200)
    assert pairs.shape == rowpair_avx2_shape(1, 2, 3, 10) == (1, 5, 2, 2, 32)
    xpad = np.pad(x, ((0, 0), (0, 0), (1, 3), (1, 7)), constant_values=200)
    for r, g, s, k, i in np.ndindex(5, 2, 2, 2, 6):
        assert pairs[0, r, g, 1, 16 * s + 6 * k + i] == xpad[0, 1, r + k, 8 * g + 4 * s + i]
    assert (pairs[..., 12:16] == 200).all() and (pairs[..., 28:32] == 200).all()


def test_the_shuffle_indices_gather_each_patterns_taps_from_one_of_the_two_pairs():
    x = np.random.default_rng(0).integers(0, 256, (1, 1, 4, 8)).astype("uint8")
    pairs = pack_rowpairs_avx2(x, 0)
    xpad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    index = shuffle_index_avx2(LIB)
    offsets = LIB.tap_offsets()
    for p in range(LIB.size):
        for h in range(2):                     # rows whose second pair exists
            first, second = pairs[0, h, 0, 0], pairs[0, h + 2, 0, 0]
            for s, i, t in np.ndindex(2, 4, 4):
                a, b = index[p, 16 * s + 4 * i + t], index[p, 32 + 16 * s + 4 * i + t]
                got = (0 if a & 0x80 else first[16 * s + a]) | (0 if b & 0x80 else second[16 * s + b])
                kh, kw = offsets[p, t]
                assert got == xpad[0, 0, h + kh, 4 * s + i + kw]
                assert (a & 0x80) != (b & 0x80)           # exactly one of the two shuffles writes it


def test_a_pair_of_taps_at_most_128_fits_the_saturating_int16_of_vpmaddubsw():
    assert 255 * MAX_PAIR <= 2 ** 15 - 1 < 255 * (MAX_PAIR + 1)
