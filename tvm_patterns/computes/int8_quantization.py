"""The float <-> int8 stages around the int8 kernels, as TE computes (the quantization before an int8
conv is a TIR function: ``schedules/int8_quantize_rowpairs_x86``).

    quantize_dense:     float [M, C] -> uint8 codes clip(floor(x / scale + 0.5) + zero_point, 0, 255)
    quantize_rowtriples: float [N, C, H, W] -> the row triples of signed codes (code - 128) of the NEON conv
    dequantize_conv:    int32 [N, K, H, W] sums -> float: sum * scale * weight_scale[k]
    dequantize_dense:   int32 [M, K] sums -> float, the same

The scale and zero point of the input are the layer's calibrated ones (compile-time constants), so the
zero point's share of the sums, -zero_point * sum(w[k]), is a constant the kernel adds as its bias.
The bias and activation after the conv fuse into this stage.
"""
from __future__ import annotations

from tvm import te, tirx

from tvm_patterns.sparsity.int8_filter_block import TRIPLE_COLUMNS, TRIPLE_POSITIONS

DEQUANTIZE_BLOCK = "int8_dequantize"
QUANTIZE_BLOCK = "int8_quantize"
QUANTIZE_ROWTRIPLES = "int8_quantize_rowtriples"


def quantize_dense(x: te.Tensor, scale: float, zero_point: int) -> te.Tensor:
    """x float32 [M, C] -> uint8 codes on the grid (scale, zero point), rounded as the conv's quantizer."""
    inv = tirx.const(1.0 / scale, "float32")   # the float32 reciprocal, as the row-pair quantizer's grid holds it
    return te.compute(x.shape, lambda m, c: tirx.max(tirx.min(
        tirx.floor(x[m, c] * inv + tirx.const(0.5, "float32")) + tirx.const(float(zero_point), "float32"),
        tirx.const(255.0, "float32")), tirx.const(0.0, "float32")).astype("uint8"), name=QUANTIZE_BLOCK)


def quantize_rowtriples(x: te.Tensor, scale: float, zero_point: int, shape: tuple) -> te.Tensor:
    """x float32 [N, C, H, W] -> its int8 row triples [shape] (``sparsity.int8_filter_block``): byte
    10 kh + i of triple (r, g) is code - 128 of x[r + kh - 1, 8 g + i - 1], zero_point - 128 off the input."""
    _, _, h, w = x.shape
    inv = tirx.const(1.0 / scale, "float32")

    def code(n, c, r, g, b):
        row, col = r + b // TRIPLE_COLUMNS - 1, g * TRIPLE_POSITIONS + b % TRIPLE_COLUMNS - 1
        inside = tirx.all(b < 3 * TRIPLE_COLUMNS, row >= 0, row < h, col >= 0, col < w)
        v = x[n, c, tirx.max(tirx.min(row, h - 1), 0), tirx.max(tirx.min(col, w - 1), 0)]
        u = tirx.max(tirx.min(tirx.floor(v * inv + tirx.const(0.5, "float32")) + tirx.const(float(zero_point), "float32"),
                              tirx.const(255.0, "float32")), tirx.const(0.0, "float32"))
        return tirx.if_then_else(inside, (u - tirx.const(128.0, "float32")).astype("int8"),
                                 tirx.const(zero_point - 128, "int8"))

    return te.compute(shape, code, name=QUANTIZE_ROWTRIPLES)


def dequantize_conv(acc: te.Tensor, weight_scale: te.Tensor, scale: float) -> te.Tensor:
    """acc int32 [N, K, H, W] (the sums of the input's and the weight's codes) -> float32."""
    return te.compute(acc.shape, lambda n, k, h, w: acc[n, k, h, w].astype("float32")
                      * (weight_scale[k] * tirx.const(scale, "float32")), name=DEQUANTIZE_BLOCK)


def dequantize_dense(acc: te.Tensor, weight_scale: te.Tensor, scale: float) -> te.Tensor:
    """acc int32 [M, K] -> float32."""
    return te.compute(acc.shape, lambda m, k: acc[m, k].astype("float32")
                      * (weight_scale[k] * tirx.const(scale, "float32")), name=DEQUANTIZE_BLOCK)
