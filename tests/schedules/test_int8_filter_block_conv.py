"""Int8 filter-block pattern conv on x86 (AVX-512 VNNI): the 4 taps of a kernel are one vpdpbusd lane
group, gathered from row pairs by one vpermi2b; bit-exact against the same integer arithmetic."""
import re

import numpy as np
import pytest
import torch
import tvm

import tvm_patterns as tp
from schedules.int8_filter_block_pattern_conv2d_rowpair_x86 import (Knobs, default_knobs,
                                                                     int8_filter_block_pattern_conv2d_rowpair_x86,
                                                                     missing_features, out_hw)
from tvm_patterns.passes.register_tiles import tir_pipeline
from tvm_patterns.sparsity import PatternLibrary, project_pattern_connectivity
from tvm_patterns.sparsity.filter_block import project_filter_block_pattern
from tvm_patterns.sparsity.int8_filter_block import (int8_filter_block_tables, pack_records, pack_rowpairs,
                                                     pack_rowtriples, permute_index, record_index, records_shape,
                                                     rowpair_shape, rowtriple_index, rowtriple_shape)

LIB = PatternLibrary.patdnn()
# A VNNI CPU named explicitly: the kernel compiles (and its assembly is read) on any host.
VNNI = tvm.target.Target({"kind": "llvm", "mcpu": "sapphirerapids"})
HOST = tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})


def int8_weight(K, C, filters, connectivity=2.0, seed=0):
    w = np.random.default_rng(seed).standard_normal((K, C, 3, 3)).astype("float32")
    w = project_filter_block_pattern(w, LIB, connectivity, filters)
    q = np.clip(np.round(w / np.abs(w).max() * 127), -127, 127).astype("int8")
    q[w == 0] = 0
    return q


def reference(x, w, bias, zero_point, stride=1):
    """The integer conv (padding 1) of x - zero_point and w, plus bias, in int64."""
    out = torch.nn.functional.conv2d(torch.from_numpy(x.astype(np.float64) - zero_point),
                                     torch.from_numpy(w.astype(np.float64)), torch.from_numpy(bias.astype(np.float64)),
                                     stride=stride, padding=1)
    return out.numpy().astype(np.int64)   # float64 holds these sums exactly (< 2^53)


def build(shape, K, filters, tables, knobs, target=VNNI):
    N, C, H, W = shape
    B, L = tables.channel.shape
    f = int8_filter_block_pattern_conv2d_rowpair_x86(N, C, H, W, K, B, filters, L, LIB.size, knobs)
    return tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=target,
                       tir_pipeline=tir_pipeline(target))


def run(shape, K, filters, knobs, zero_point=0, seed=0):
    N, C, H, W = shape
    rng = np.random.default_rng(seed)
    w = int8_weight(K, C, filters, seed=seed)
    x = rng.integers(0, 256, shape).astype("uint8")
    bias = rng.integers(-5000, 5000, K).astype("int32")
    t = int8_filter_block_tables(w, LIB, filters)
    B = t.channel.shape[0]
    folded = np.zeros(B * filters, "int32")                # -zero_point * sum(w) folded into the bias
    folded[:K] = bias - zero_point * w.astype(np.int64).sum(axis=(1, 2, 3))
    pack, index = (pack_rowpairs, permute_index) if knobs.stride == 1 else (pack_records, record_index)
    args = [tvm.runtime.tensor(a) for a in (pack(x, zero_point, knobs.rows, knobs.groups), t.length,
                                            t.channel, t.pattern, t.value, index(LIB), folded,
                                            np.zeros((N, K, *out_hw(H, W, knobs.stride)), "int32"))]
    build(shape, K, filters, t, knobs, HOST)["main"](*args)
    return args[-1].numpy(), reference(x, w, bias, zero_point, knobs.stride)


def require_vnni():
    missing = missing_features(HOST)
    if missing:   # a CPU without the instructions cannot execute them; the assembly tests still run
        pytest.skip(f"this CPU ({HOST.mcpu}) lacks {', '.join(missing)}")


@pytest.mark.parametrize("shape,K,filters,knobs,zero_point", [
    ((1, 16, 8, 16), 8, 4, Knobs(1, 1), 0),
    ((2, 13, 9, 37), 10, 4, Knobs(3, 1), 3),     # odd channels, a row tail, K not a multiple of F, batch 2
    ((1, 5, 7, 40), 6, 2, Knobs(2, 2), 128),     # two groups a tile row, rows past the output
    ((2, 7, 6, 20), 9, 4, Knobs(2, 1, blocks_inner=True), 5),   # threads split rows, blocks inner
    ((1, 24, 14, 14), 16, 4, None, 17),          # the default tile of a VGG-16 conv5 shape
    # stride 2, from stride-2 records: an odd input (its last column and row read the padding), two
    # groups a tile row past the output, the default tile of a ResNet-50 layer-2 shape
    ((2, 13, 9, 37), 10, 4, Knobs(3, 1, stride=2), 3),
    ((1, 5, 8, 70), 6, 2, Knobs(2, 2, stride=2), 128),
    ((1, 24, 56, 56), 16, 4, "stride 2", 17),
])
def test_the_int8_kernel_is_bit_exact_on_odd_shapes(shape, K, filters, knobs, zero_point):
    require_vnni()
    if knobs is None or knobs == "stride 2":
        knobs = default_knobs(filters, shape[1], shape[2], shape[3], stride=1 if knobs is None else 2)
    got, ref = run(shape, K, filters, knobs, zero_point)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("stride", [1, 2])
def test_the_hot_loop_gathers_with_vpermi2b_and_multiplies_with_vpdpbusd(stride):
    w = int8_weight(32, 64, 4, connectivity=3.6)
    t = int8_filter_block_tables(w, LIB, 4)
    asm = build((1, 64, 28, 28), 32, 4, t, default_knobs(4, 64, 28, 28, stride)).mod.inspect_source("asm")
    loop = hot_loop(asm)
    assert sum("vpdpbusd" in line for line in loop) >= 4 * sum("vperm" in line and "b\t" in line for line in loop) > 0
    assert not any("vpmaddubsw" in line or "vpmulld" in line for line in loop)
    assert not any("%rsp" in line for line in loop)                  # the accumulators stay in registers


def hot_loop(asm: str, instruction: str = "vpdpbusd") -> list[str]:
    """The loop (its label to its back branch: x86 j*, aarch64 b*) densest in ``instruction``."""
    lines = asm.splitlines()
    best, density = [], 0.0
    for i, line in enumerate(lines):
        if line.startswith(".LBB") and line.rstrip().endswith(":"):
            label = line.strip()[:-1]
            for j in range(i + 1, len(lines)):
                if lines[j].strip()[:1] in ("j", "b") and lines[j].strip().endswith(label):
                    body = lines[i:j + 1]
                    if sum(instruction in b for b in body) / len(body) > density:
                        best, density = body, sum(instruction in b for b in body) / len(body)
                    break
    return best


def test_a_target_without_vnni_is_named():
    assert missing_features(tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"})) == ["avx512vnni",
                                                                                            "avx512vbmi"]
    assert missing_features(VNNI) == []


def test_row_pairs_hold_two_padded_rows_of_32_columns_every_16_positions():
    x = np.arange(2 * 3 * 5, dtype="uint8").reshape(1, 2, 3, 5) + 1
    p = pack_rowpairs(x, zero_point=9)
    assert p.shape == rowpair_shape(1, 2, 3, 5) == (1, 2, 5, 1, 64)
    assert (p[0, 1, 0, 0, :32] == 9).all()                         # the padding row above
    assert p[0, 1, 0, 0, 32:38].tolist() == [9, *x[0, 1, 0].tolist()]   # row 0 behind its left padding
    assert p[0, 1, 1, 0, :6].tolist() == [9, *x[0, 1, 0].tolist()]


def test_the_gather_index_puts_tap_t_of_position_i_in_byte_4i_plus_t():
    index = permute_index(LIB)
    rng = np.random.default_rng(4)
    xpad = rng.integers(0, 256, (3, 32)).astype("uint8")            # xpad rows h, h+1, h+2 at columns 16g..
    tables = np.concatenate([xpad[0], xpad[1], xpad[2], np.zeros(32, "uint8")])
    for p, taps in enumerate(LIB.tap_offsets()):
        gathered = tables[index[p]].reshape(16, 4)
        for i in range(16):
            assert gathered[i].tolist() == [xpad[kh, i + kw] for kh, kw in taps]


def test_stride2_records_hold_three_padded_rows_of_33_columns_every_16_output_positions():
    x = np.arange(2 * 5 * 35, dtype="uint8").reshape(1, 2, 5, 35) % 250 + 1
    r = pack_records(x, zero_point=0)
    assert r.shape == records_shape(1, 2, 5, 35) == (1, 2, 3, 2, 128)   # output 3 x 18: rows 0..2, two groups
    assert (r[0, 1, 0, 0, :33] == 0).all()                              # output row 0, tap row 0: the padding row
    assert r[0, 1, 0, 0, 33:66].tolist() == [0, *x[0, 1, 0, :32].tolist()]   # tap row 1: input row 0
    assert r[0, 1, 1, 1, 66:99].tolist() == [*x[0, 1, 3, 31:35].tolist(), *[0] * 29]   # group 1 from column 31
    assert (r[..., 99:] == 0).all()


def test_the_stride2_gather_index_puts_tap_t_of_position_i_in_byte_4i_plus_t():
    index = record_index(LIB)
    xpad = np.random.default_rng(4).integers(0, 256, (3, 33)).astype("uint8")   # rows 2h.., columns 32g..
    record = np.concatenate([xpad.ravel(), np.zeros(29, "uint8")])
    for p, taps in enumerate(LIB.tap_offsets()):
        gathered = record[index[p]].reshape(16, 4)
        for i in range(16):
            assert gathered[i].tolist() == [xpad[kh, 2 * i + kw] for kh, kw in taps]


def test_the_tables_pack_each_filters_four_taps_into_one_int32():
    w = int8_weight(6, 5, 4)
    t = int8_filter_block_tables(w, LIB, 4)
    assert t.value.shape[::2] == (2, 4) and t.n_filters == 6
    b, j, f = 1, 0, 1                                                # filter 5, block 1's first kernel
    taps = LIB.tap_offsets()[t.pattern[b, j]]
    expected = w[4 + f, t.channel[b, j], taps[:, 0], taps[:, 1]]
    assert np.array_equal(np.array([t.value[b, j, f]], "<i4").view("int8"), expected)
    assert not t.value[1, :, 2:].any()                               # filters 6 and 7 do not exist


@pytest.mark.parametrize("weight,error,message", [
    (np.zeros((4, 4, 3, 3), "float32"), ValueError, "need an int8 weight"),
    (np.sign(project_pattern_connectivity(np.random.default_rng(1).standard_normal((16, 16, 3, 3)), LIB, 3.6)
             ).astype("int8"), ValueError, "do not share"),
])
def test_a_weight_that_does_not_fit_is_refused(weight, error, message):
    with pytest.raises(error, match=message):
        int8_filter_block_tables(weight, LIB, 4)


def test_a_library_of_other_than_four_taps_is_not_implemented():
    lib = PatternLibrary(np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], dtype=bool))
    with pytest.raises(NotImplementedError, match="4 taps a lane"):
        int8_filter_block_tables(np.zeros((4, 4, 3, 3), "int8"), lib, 4)


@pytest.mark.parametrize("shape,rows,groups,scale,zero_point,stride", [
    ((2, 5, 7, 37), 3, 1, 0.02, 3, 1),       # batch 2, a tail of 5 columns, rows past the output
    ((1, 3, 16, 32), 4, 2, 0.5, 128, 1),     # whole vectors, two groups a tile row
    ((2, 5, 7, 37), 3, 1, 0.02, 3, 2),       # stride-2 records
])
def test_the_quantization_into_row_pairs_rounds_half_up_and_saturates(shape, rows, groups, scale, zero_point, stride):
    require_vnni()
    from schedules.int8_quantize_rowpairs_x86 import int8_quantize_rowpairs_x86
    x = (np.random.default_rng(5).standard_normal(shape) * 200 * scale).astype("float32")   # some beyond 0..255
    inv = np.float32(1 / scale)
    codes = np.clip(np.floor(x * inv + np.float32(0.5)) + zero_point, 0, 255).astype("uint8")
    expected = (pack_rowpairs if stride == 1 else pack_records)(codes, zero_point, rows, groups)
    f = int8_quantize_rowpairs_x86(*shape, rows, groups, stride=stride).with_attr("global_symbol", "main")
    args = [tvm.runtime.tensor(a) for a in (x, np.array([inv, zero_point], "float32"), np.zeros(expected.shape, "uint8"))]
    tvm.compile(tvm.IRModule({"main": f}), target=HOST, tir_pipeline=tir_pipeline(HOST))["main"](*args)
    assert (codes == 0).any() and (codes == 255).any()
    np.testing.assert_array_equal(args[-1].numpy(), expected)


def requantized_reference(sums, scale, grid):
    """The next layer's codes of int32 sums [N, K, H, W]: the float32 operations of the float epilogue
    (sums * scale + bias) and of the next quantizer, the lowest code grid[2]."""
    y = sums.astype("float32") * scale[:, 0, None, None] + scale[:, 1, None, None]
    return np.clip(np.floor(y * grid[0] + np.float32(0.5)) + grid[1], grid[2], 255).astype("uint8")


@pytest.mark.parametrize("shape,K,filters,knobs,lowest", [
    ((2, 13, 9, 37), 10, 4, Knobs(3, 1), 7),     # a row tail, K not a multiple of F; a ReLU (lowest = zero point)
    ((1, 5, 7, 40), 6, 2, Knobs(2, 2), 0),       # no ReLU: the whole grid
    ((2, 13, 9, 37), 10, 4, Knobs(2, 1, stride=2), 7),   # stride 2
])
def test_the_requantizing_kernel_writes_the_next_layers_codes_of_its_sums(shape, K, filters, knobs, lowest):
    require_vnni()
    N, C, H, W = shape
    rng = np.random.default_rng(2)
    w = int8_weight(K, C, filters, seed=2)
    x = rng.integers(0, 256, shape).astype("uint8")
    t = int8_filter_block_tables(w, LIB, filters)
    B = t.channel.shape[0]
    folded = np.zeros(B * filters, "int32")
    folded[:K] = -3 * w.astype(np.int64).sum(axis=(1, 2, 3))       # zero point 3
    scale = np.zeros((B * filters, 2), "float32")
    scale[:K, 0] = rng.uniform(1e-4, 3e-4, K)
    scale[:K, 1] = rng.uniform(-1, 1, K)
    grid = np.array([20.0, 7, lowest], "float32")                   # next scale 0.05, zero point 7
    f = int8_filter_block_pattern_conv2d_rowpair_x86(N, C, H, W, K, B, filters, t.channel.shape[1], LIB.size, knobs,
                                                     requantize=True)
    pack, index = (pack_rowpairs, permute_index) if knobs.stride == 1 else (pack_records, record_index)
    args = [tvm.runtime.tensor(a) for a in (pack(x, 3, knobs.rows, knobs.groups), t.length, t.channel,
                                            t.pattern, t.value, index(LIB), folded, scale, grid,
                                            np.zeros((N, K, *out_hw(H, W, knobs.stride)), "uint8"))]
    tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=HOST,
                tir_pipeline=tir_pipeline(HOST))["main"](*args)
    expected = requantized_reference(reference(x, w, np.zeros(K, "int32"), 3, knobs.stride), scale[:K], grid)
    assert (expected == lowest).any() and (expected == 255).any() and (expected > lowest).mean() > 0.2
    np.testing.assert_array_equal(args[-1].numpy(), expected)


@pytest.mark.parametrize("stride", [1, 2])
def test_codes_already_on_the_grid_are_only_laid_out_in_row_pairs_or_records(stride):
    require_vnni()
    from schedules.int8_quantize_rowpairs_x86 import int8_quantize_rowpairs_x86
    codes = np.random.default_rng(6).integers(0, 256, (2, 3, 7, 37)).astype("uint8")
    expected = (pack_rowpairs if stride == 1 else pack_records)(codes, 9, 3, 1)
    f = int8_quantize_rowpairs_x86(2, 3, 7, 37, 3, 1, codes=True, stride=stride).with_attr("global_symbol", "main")
    args = [tvm.runtime.tensor(a) for a in (codes, np.array([0.5, 9], "float32"), np.zeros(expected.shape, "uint8"))]
    tvm.compile(tvm.IRModule({"main": f}), target=HOST, tir_pipeline=tir_pipeline(HOST))["main"](*args)
    np.testing.assert_array_equal(args[-1].numpy(), expected)


# aarch64 (sdot with dot product, smull without): the same conv on the emulated device (qemu-user), bit-exact
def build_neon(shape, K, filters, tables, knobs):
    from schedules.int8_filter_block_pattern_conv2d_rowtriple_neon import int8_filter_block_pattern_conv2d_rowtriple_neon
    N, C, H, W = shape
    f = int8_filter_block_pattern_conv2d_rowtriple_neon(N, C, H, W, K, tables.channel.shape[0], filters,
                                                        tables.channel.shape[1], LIB.size, knobs)
    target = tp.targets.arm_cpu("cortex-a76" if knobs.sdot else "rk3399")
    return tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=target,
                       tir_pipeline=tir_pipeline(target))


@pytest.mark.parametrize("sdot", [1, 0])
@pytest.mark.parametrize("shape,K,filters,rows,groups,zero_point", [
    ((2, 13, 9, 37), 10, 4, 2, 1, 3),      # odd channels, a row tail past half a triple, K not a multiple of F
    ((1, 5, 7, 18), 6, 2, 3, 2, 200),      # two filters a block, rows and triples past the output
    ((1, 6, 5, 16), 8, 4, 1, 2, 128),      # whole triples
])
def test_the_aarch64_kernel_is_bit_exact_on_the_emulated_device(arm_device, tmp_path, shape, K, filters, rows, groups,
                                                                zero_point, sdot):
    from schedules.int8_filter_block_pattern_conv2d_rowtriple_neon import Knobs as NeonKnobs
    N, C, H, W = shape
    rng = np.random.default_rng(1)
    w = int8_weight(K, C, filters, seed=1)
    x = rng.integers(0, 256, shape).astype("uint8")
    bias = rng.integers(-5000, 5000, K).astype("int32")
    t = int8_filter_block_tables(w, LIB, filters)
    folded = np.zeros(t.channel.shape[0] * filters, "int32")   # signed codes x - 128: fold zero_point - 128
    folded[:K] = bias - (zero_point - 128) * w.astype(np.int64).sum(axis=(1, 2, 3))
    path = tp.export_library(build_neon(shape, K, filters, t, NeonKnobs(rows, groups, sdot)), tmp_path / "k.so",
                             tp.targets.arm_cpu())
    got = arm_device.run(path, pack_rowtriples(x, zero_point, rows, groups), t.length, t.channel, t.pattern, t.value,
                         rowtriple_index(LIB), folded, np.zeros((N, K, H, W), "int32"))[-1]
    np.testing.assert_array_equal(got, reference(x, w, bias, zero_point))


def test_the_requantizing_aarch64_kernel_writes_the_next_layers_codes_on_the_emulated_device(arm_device, tmp_path):
    from schedules.int8_filter_block_pattern_conv2d_rowtriple_neon import (
        Knobs as NeonKnobs, int8_filter_block_pattern_conv2d_rowtriple_neon)
    shape, K, filters, zero_point = (2, 13, 9, 37), 10, 4, 3
    N, C, H, W = shape
    rng = np.random.default_rng(2)
    w = int8_weight(K, C, filters, seed=2)
    x = rng.integers(0, 256, shape).astype("uint8")
    t = int8_filter_block_tables(w, LIB, filters)
    B = t.channel.shape[0]
    folded = np.zeros(B * filters, "int32")
    folded[:K] = -(zero_point - 128) * w.astype(np.int64).sum(axis=(1, 2, 3))
    scale = np.zeros((B * filters, 2), "float32")
    scale[:K, 0], scale[:K, 1] = rng.uniform(1e-4, 3e-4, K), rng.uniform(-1, 1, K)
    grid = np.array([20.0, 7, 7], "float32")                         # a ReLU: the lowest code is the zero point
    f = int8_filter_block_pattern_conv2d_rowtriple_neon(N, C, H, W, K, B, filters, t.channel.shape[1], LIB.size,
                                                        NeonKnobs(2, 1), requantize=True)
    target = tp.targets.arm_cpu()
    path = tp.export_library(tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=target,
                                         tir_pipeline=tir_pipeline(target)), tmp_path / "rq.so", target)
    got = arm_device.run(path, pack_rowtriples(x, zero_point, 2, 1), t.length, t.channel, t.pattern, t.value,
                         rowtriple_index(LIB), folded, scale, grid, np.zeros((N, K, H, W), "uint8"))[-1]
    expected = requantized_reference(reference(x, w, np.zeros(K, "int32"), zero_point), scale[:K], grid)
    assert (expected == 7).any() and (expected == 255).any()
    np.testing.assert_array_equal(got, expected)


def test_the_aarch64_kernel_without_dot_product_runs_on_a_cortex_a72_bit_exact(arm_device_without_dotprod, tmp_path):
    """smull + sadalp only: on the emulated Cortex-A72 an sdot would be an illegal instruction."""
    from schedules.int8_filter_block_pattern_conv2d_rowtriple_neon import Knobs as NeonKnobs
    shape, K, filters, zero_point = (2, 13, 9, 37), 10, 4, 3
    N, C, H, W = shape
    rng = np.random.default_rng(3)
    w = int8_weight(K, C, filters, seed=3)
    x = rng.integers(0, 256, shape).astype("uint8")
    bias = rng.integers(-5000, 5000, K).astype("int32")
    t = int8_filter_block_tables(w, LIB, filters)
    folded = np.zeros(t.channel.shape[0] * filters, "int32")
    folded[:K] = bias - (zero_point - 128) * w.astype(np.int64).sum(axis=(1, 2, 3))
    path = tp.export_library(build_neon(shape, K, filters, t, NeonKnobs(2, 1, sdot=0)), tmp_path / "k.so",
                             tp.targets.arm_cpu("rk3399"))
    got = arm_device_without_dotprod.run(path, pack_rowtriples(x, zero_point, 2, 1), t.length, t.channel, t.pattern,
                                         t.value, rowtriple_index(LIB), folded, np.zeros((N, K, H, W), "int32"))[-1]
    np.testing.assert_array_equal(got, reference(x, w, bias, zero_point))


def test_the_aarch64_hot_loop_without_dot_product_multiplies_with_smull_and_adds_pairs_with_sadalp():
    from schedules.int8_filter_block_pattern_conv2d_rowtriple_neon import default_knobs as neon_knobs
    w = int8_weight(32, 64, 4, connectivity=3.6)
    t = int8_filter_block_tables(w, LIB, 4)
    knobs = neon_knobs(4, 28, 28, sdot=False)
    assert knobs.sdot == 0 and 4 * knobs.rows * knobs.groups * 2 * 2 <= 16      # two accumulators per sdot's
    asm = build_neon((1, 64, 28, 28), 32, 4, t, knobs).mod.inspect_source("asm")
    loop = hot_loop(asm, "smull")
    assert sum("\tsmull" in line for line in loop) == sum("\tsadalp" in line for line in loop) == 16
    assert "sdot" not in asm and sum("\ttbl\t" in line for line in loop) == 2


def test_the_aarch64_hot_loop_gathers_with_two_register_tbl_and_multiplies_with_indexed_sdot():
    from schedules.int8_filter_block_pattern_conv2d_rowtriple_neon import default_knobs as neon_knobs
    w = int8_weight(32, 64, 4, connectivity=3.6)
    t = int8_filter_block_tables(w, LIB, 4)
    asm = build_neon((1, 64, 28, 28), 32, 4, t, neon_knobs(4, 28, 28)).mod.inspect_source("asm")
    loop = hot_loop(asm, "sdot")
    tbl = [line for line in loop if "\ttbl\t" in line]
    assert sum("sdot" in line for line in loop) >= 4 * len(tbl) > 0
    assert all(line.count(".16b") == 4 for line in tbl)                          # {t0, t1}: one µop
    assert all(re.search(r"\.4b\[\d\]", line) for line in loop if "sdot" in line)   # the indexed form
    assert not any(line.split()[0] in ("str", "stp", "stur", "mov") for line in loop[1:])   # no spills, no copies


def test_the_gather_indices_of_aarch64_put_tap_t_of_position_4s_plus_i_in_byte_4i_plus_t_of_half_s():
    index = rowtriple_index(LIB)
    triple = np.random.default_rng(4).integers(-128, 128, 32).astype("int8")   # 3 rows x 10 columns, 2 spare
    for p, taps in enumerate(LIB.tap_offsets()):
        for s in range(2):
            gathered = triple[index[p, 16 * s:16 * s + 16]].reshape(4, 4)
            for i in range(4):
                assert gathered[i].tolist() == [triple[10 * kh + 4 * s + i + kw] for kh, kw in taps]


def test_row_triples_hold_three_padded_rows_of_ten_signed_columns_every_eight_positions():
    x = np.arange(2 * 3 * 9, dtype="uint8").reshape(1, 2, 3, 9) + 126
    p = pack_rowtriples(x, zero_point=9, rows=2, groups=1)
    assert p.shape == rowtriple_shape(1, 2, 3, 9, 2, 1) == (1, 2, 4, 2, 32) and p.dtype == np.int8
    signed = x[0, 1].astype(int) - 128
    assert (p[0, 1, 0, 0, :10] == 9 - 128).all()                                  # the padding row above
    assert p[0, 1, 0, 0, 10:20].tolist() == [9 - 128, *signed[0, :9].tolist()]   # row 0 behind its left padding
    assert p[0, 1, 0, 1, 10:20].tolist() == [*signed[0, 7:9].tolist(), *[9 - 128] * 8]   # the next 8 positions


@pytest.mark.parametrize("dtype", ["float32", "uint8"])   # uint8: codes a conv wrote, only laid out
def test_the_aarch64_quantization_writes_the_row_triples_of_the_codes(dtype):
    from tvm import te
    from tvm_patterns.computes.int8_quantization import quantize_rowtriples
    x = (np.random.default_rng(8).standard_normal((2, 3, 7, 19)) * 3).astype("float32")
    scale, zero_point = 0.02, 117
    codes = np.clip(np.floor(x * np.float32(1 / scale) + np.float32(0.5)) + zero_point, 0, 255).astype("uint8")
    expected = pack_rowtriples(codes, zero_point, 2, 2)
    xt, grid = te.placeholder(x.shape, dtype), te.placeholder((2,), "float32")
    f = tvm.compile(te.create_prim_func([xt, grid, quantize_rowtriples(xt, grid, expected.shape)])
                    .with_attr("global_symbol", "main"), target=HOST)
    args = [tvm.runtime.tensor(a) for a in (x if dtype == "float32" else codes,
                                            np.array([1 / scale, zero_point], "float32"), np.zeros(expected.shape, "int8"))]
    f(*args)
    assert (codes == 0).any() and (codes == 255).any()
    np.testing.assert_array_equal(args[-1].numpy(), expected)
