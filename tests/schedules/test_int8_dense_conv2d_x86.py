"""Int8 dense conv on x86 (a stem, a layer no sparse kind takes): the input quantized into patches, each quad's
4 patch codes interleaved a position, and multiplied by the int8 1x1 kernel with one load a vector; bit-exact
against the integer conv. And the byte max pool between int8 convs, against PyTorch's."""
import numpy as np
import pytest
import torch
import tvm

from schedules.int8_block_sparse_conv2d_1x1_x86 import int8_block_sparse_conv2d_1x1_x86
from schedules.int8_quantize_im2col_x86 import int8_quantize_im2col_x86
from schedules.max_pool2d_uint8_nchw_x86 import max_pool2d_uint8_nchw_x86
from tvm_patterns.passes.register_tiles import tir_pipeline
from tvm_patterns.sparsity.int8_block import dense_quad_tables, pack_patches, patches_shape

from .test_int8_block_sparse_conv2d_1x1_x86 import VNNI
from .test_int8_filter_block_conv import HOST, hot_loop, require_vnni
from .test_int8_filter_block_conv_avx2 import require_avx2


def compiled(f, target=HOST):
    return tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=target,
                       tir_pipeline=tir_pipeline(target))["main"]


CONVS = [   # input shape, K, kernel, strides, padding (top, left, bottom, right)
    ((1, 3, 30, 34), 20, (7, 7), (2, 2), (3, 3, 3, 3)),    # a ResNet stem: 147 taps, K not a multiple of a block
    ((2, 5, 9, 37), 8, (3, 3), (1, 1), (1, 1, 1, 1)),      # batch 2, 45 taps, a row tail
    ((1, 3, 13, 21), 17, (5, 3), (2, 1), (2, 1, 0, 1)),    # non-square kernel, strides and padding
]


@pytest.mark.parametrize("vnni", [True, False], ids=["vnni", "avx2"])
@pytest.mark.parametrize("shape,K,kernel,strides,padding", CONVS)
def test_the_int8_dense_conv_is_the_integer_conv_of_the_patches_bit_exact(vnni, shape, K, kernel, strides, padding):
    (require_vnni if vnni else require_avx2)()
    N, C, H, W = shape
    rng = np.random.default_rng(1)
    w = rng.integers(-127 if vnni else -64, 128 if vnni else 65, (K, C, *kernel)).astype("int8")
    x = rng.integers(0, 256, shape).astype("uint8")
    zero_point, R = 9, 16 if vnni else 8
    t = dense_quad_tables(w.reshape(K, -1), R)
    B, Q = t.col.shape[0], t.quads
    patches = pack_patches(x, zero_point, kernel, strides, padding)
    assert patches.shape == patches_shape(N, C, H, W, kernel, strides, padding)
    _, _, Ho, W4 = patches.shape
    bias = np.zeros(B * R, "int32")
    bias[:K] = rng.integers(-5000, 5000, K)
    out = tvm.runtime.tensor(np.zeros((N, K, Ho, W4 // 4), "int32"))
    compiled(int8_block_sparse_conv2d_1x1_x86(N, 4 * Q, (Ho, W4 // 4), K, B, R, Q, vnni, patches=True))(
        *(tvm.runtime.tensor(a) for a in (patches, t.col, t.value, bias)), out)
    expected = torch.nn.functional.conv2d(
        torch.nn.functional.pad(torch.from_numpy(x.astype(np.float64)) - zero_point,
                                (padding[1], padding[3], padding[0], padding[2])),
        torch.from_numpy(w.astype(np.float64)), stride=strides).numpy().astype(np.int64)
    # the padding holds the zero point: the kernel's sums are over x - zero point once it is folded in
    folded = zero_point * w.astype(np.int64).sum(axis=(1, 2, 3))
    np.testing.assert_array_equal(out.numpy(), expected + bias[:K, None, None] + folded[:, None, None])


@pytest.mark.parametrize("codes", [False, True], ids=["from-float", "from-codes"])
@pytest.mark.parametrize("shape,K,kernel,strides,padding", CONVS)
def test_the_patches_hold_each_quads_four_codes_interleaved_a_position(codes, shape, K, kernel, strides, padding):
    require_avx2()
    x = (np.random.default_rng(2).standard_normal(shape) * 3).astype("float32")
    inv, zero_point = np.float32(1 / 0.02), 7
    q = np.clip(np.floor(x * inv + np.float32(0.5)) + zero_point, 0, 255).astype("uint8")
    expected = pack_patches(q, zero_point, kernel, strides, padding)
    out = tvm.runtime.tensor(np.zeros(expected.shape, "uint8"))
    compiled(int8_quantize_im2col_x86(*shape, kernel, strides, padding, codes=codes))(
        tvm.runtime.tensor(q if codes else x), tvm.runtime.tensor(np.array([inv, zero_point], "float32")), out)
    assert (q == 0).any() and (q == 255).any()
    np.testing.assert_array_equal(out.numpy(), expected)


def test_a_patch_quad_is_four_consecutive_taps_and_the_taps_past_the_last_are_the_zero_point():
    x = np.arange(2 * 3 * 4, dtype="uint8").reshape(1, 2, 3, 4) + 1
    p = pack_patches(x, 200, (3, 3), (1, 1), (1, 1, 1, 1))          # 18 taps: 5 quads, the last 2 taps padding
    assert p.shape == (1, 5, 3, 16)
    # taps 4..7 (kh, kw) = (1, 1), (1, 2), (2, 0), (2, 1) of position (1, 2): input rows 1, 1, 2, 2, columns 2, 3, 1, 2
    assert p[0, 1, 1, 4 * 2:4 * 3].tolist() == [x[0, 0, 1, 2], x[0, 0, 1, 3], x[0, 0, 2, 1], x[0, 0, 2, 2]]
    # taps 16, 17: channel 1, (kh, kw) = (2, 1), (2, 2); at position (0, 0) input row 1, columns 0, 1; then 2 past the last
    assert p[0, 4, 0, :4].tolist() == [x[0, 1, 1, 0], x[0, 1, 1, 1], 200, 200]


def test_the_dense_kernels_hot_loop_is_one_load_and_a_vpdpbusd_per_row_of_the_block():
    f = int8_block_sparse_conv2d_1x1_x86(1, 148, (112, 112), 64, 4, 16, 37, True, patches=True)
    loop = hot_loop(tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=VNNI,
                                tir_pipeline=tir_pipeline(VNNI)).mod.inspect_source("asm"))
    assert sum("vpdpbusd" in line for line in loop) == 16
    assert sum("vmovdq" in line for line in loop) == 1 and not any("vpmovzx" in line for line in loop)


@pytest.mark.parametrize("shape,pool,strides,padding", [
    ((1, 8, 30, 34), (3, 3), (2, 2), (1, 1, 1, 1)),     # ResNet's pool after the stem
    ((2, 5, 9, 37), (2, 2), (2, 2), (0, 0, 0, 0)),      # VGG's, a tail, batch 2
    ((1, 3, 13, 21), (3, 2), (1, 2), (1, 0, 1, 0)),     # non-square window and strides
])
def test_the_byte_max_pool_is_pytorchs(shape, pool, strides, padding):
    require_avx2()
    x = np.random.default_rng(3).integers(0, 256, shape).astype("uint8")
    expected = torch.nn.functional.max_pool2d(torch.from_numpy(x.astype(np.float32)), pool, strides,
                                              (padding[0], padding[1])).numpy().astype("uint8")
    out = tvm.runtime.tensor(np.zeros(expected.shape, "uint8"))
    compiled(max_pool2d_uint8_nchw_x86(*shape, pool, strides, padding))(tvm.runtime.tensor(x), out)
    np.testing.assert_array_equal(out.numpy(), expected)
