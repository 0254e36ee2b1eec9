"""The float <-> int8 stages around the int8 kernels, as TE computes (the quantization before an int8
conv is a TIR function: ``schedules/int8_quantize_rowpairs_x86``).

    quantize_dense:     float [M, C] -> uint8 codes clip(floor(x / scale + 0.5) + zero_point, 0, 255)
    quantize_rowtriples: float [N, C, H, W] -> the row triples of signed codes (code - 128) of the NEON conv
    requantized_codes:  int32 sums -> the next layer's uint8 codes, in an int8 conv's write-back
    dequantize_conv:    int32 [N, K, H, W] sums -> float: sum * scale * weight_scale[k]
    dequantize_dense:   int32 [M, K] sums -> float, the same
    quantize_positions: float [N, C, H, W] -> uint8 codes [N, C, Ho, Wo] of a 1x1 conv (its stride taken)

The scale and zero point of the input are the layer's calibrated ones (compile-time constants), so the
zero point's share of the sums, -zero_point * sum(w[k]), is a constant the kernel adds as its bias.
The bias and activation after the conv fuse into this stage.
"""
from __future__ import annotations

from tvm import te, tirx
from tvm.script import tirx as T

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


def quantize_rowtriples(x: te.Tensor, grid: te.Tensor, shape: tuple) -> te.Tensor:
    """x [N, C, H, W] -> its int8 row triples [shape] (``sparsity.int8_filter_block``) on grid = (1 /
    scale, zero point): byte 10 kh + i of triple (r, g) is code - 128 of x[r + kh - 1, 8 g + i - 1],
    zero point - 128 off the input. A uint8 x is codes already on the grid (written by the previous int8
    conv, ``passes/int8_requantize``), and is only laid out."""
    _, _, h, w = x.shape

    def code(n, c, r, g, b):
        row, col = r + b // TRIPLE_COLUMNS - 1, g * TRIPLE_POSITIONS + b % TRIPLE_COLUMNS - 1
        inside = tirx.all(b < 3 * TRIPLE_COLUMNS, row >= 0, row < h, col >= 0, col < w)
        v = x[n, c, tirx.max(tirx.min(row, h - 1), 0), tirx.max(tirx.min(col, w - 1), 0)]
        if x.dtype == "uint8":
            u = v.astype("float32")
        else:
            u = tirx.max(tirx.min(tirx.floor(v * grid[0] + tirx.const(0.5, "float32")) + grid[1],
                                  tirx.const(255.0, "float32")), tirx.const(0.0, "float32"))
        return (tirx.if_then_else(inside, u, grid[1]) - tirx.const(128.0, "float32")).astype("int32").astype("int8")

    return te.compute(shape, code, name=QUANTIZE_ROWTRIPLES)


def dequantize_conv(acc: te.Tensor, weight_scale: te.Tensor, scale: float) -> te.Tensor:
    """acc int32 [N, K, H, W] (the sums of the input's and the weight's codes) -> float32."""
    return te.compute(acc.shape, lambda n, k, h, w: acc[n, k, h, w].astype("float32")
                      * (weight_scale[k] * tirx.const(scale, "float32")), name=DEQUANTIZE_BLOCK)


def dequantize_dense(acc: te.Tensor, weight_scale: te.Tensor, scale: float) -> te.Tensor:
    """acc int32 [M, K] -> float32."""
    return te.compute(acc.shape, lambda m, k: acc[m, k].astype("float32")
                      * (weight_scale[k] * tirx.const(scale, "float32")), name=DEQUANTIZE_BLOCK)


def requantized_codes(sums, scale, grid, k, lanes: int):
    """uint8 codes of int32 sums of output channel k on the next layer's grid: with scale[k] = (the
    sums' float scale, the float bias) and grid = (1 / next scale, next zero point, lowest code),
    clip(floor((sums * scale[k, 0] + scale[k, 1]) * grid[0] + 0.5) + grid[1], grid[2], 255), the same
    float32 operations as the float epilogue then the next layer's quantizer (a ReLU between: lowest
    code = the zero point)."""
    def bc(x):
        return T.broadcast(x, lanes) if lanes > 1 else x
    y = T.Cast("float32" if lanes == 1 else f"float32x{lanes}", sums) * bc(scale[k, 0]) + bc(scale[k, 1])
    return quantized(y, grid, lanes, lowest=grid[2])


def quantized(y, grid, lanes: int, lowest=None):
    """uint8 codes of ``lanes`` float32 lanes y on grid = (1 / scale, zero point): clip(floor(y * grid[0] +
    0.5) + grid[1], lowest (default 0), 255), as ``quantize_positions`` rounds (in a TIR kernel's
    write-back)."""
    def bc(x):
        return T.broadcast(x, lanes) if lanes > 1 else x
    q = T.max(T.min(T.floor(y * bc(grid[0]) + bc(T.float32(0.5))) + bc(grid[1]), bc(T.float32(255.0))),
              bc(T.float32(0.0) if lowest is None else lowest))
    return T.Cast("uint8" if lanes == 1 else f"uint8x{lanes}", q)


def quantize_positions(x: te.Tensor, grid: te.Tensor, strides: tuple) -> te.Tensor:
    """x float32 [N, C, H, W] -> uint8 codes [N, C, Ho, Wo] of the positions a 1x1 conv with ``strides``
    reads, on grid = (1 / scale, zero point), rounded as ``quantize_dense``. A uint8 x is codes already on
    the grid (written by the previous int8 conv, ``passes/int8_requantize``), and is only picked."""
    n, c, h, w = (int(v) for v in x.shape)
    sh, sw = strides

    def code(i, k, y, z):
        v = x[i, k, y * sh, z * sw]
        if x.dtype == "uint8":
            return v
        return tirx.max(tirx.min(tirx.floor(v * grid[0] + tirx.const(0.5, "float32")) + grid[1],
                                 tirx.const(255.0, "float32")), tirx.const(0.0, "float32")).astype("uint8")

    return te.compute((n, c, (h - 1) // sh + 1, (w - 1) // sw + 1), code, name=QUANTIZE_BLOCK)
