"""The int8 -> float stage after an int8 conv kernel, as a TE compute (the float -> int8 one before it
is a TIR function: ``schedules/int8_quantize_rowpairs_x86``).

    dequantize_conv:    int32 [N, K, H, W] sums -> float: sum * scale * weight_scale[k]

The scale and zero point of the input are the layer's calibrated ones (compile-time constants), so the
zero point's share of the sums, -zero_point * sum(w[k]), is a constant the kernel adds as its bias.
The bias and activation after the conv fuse into this stage.
"""
from __future__ import annotations

from tvm import te, tirx

DEQUANTIZE_BLOCK = "int8_dequantize"


def dequantize_conv(acc: te.Tensor, weight_scale: te.Tensor, scale: float) -> te.Tensor:
    """acc int32 [N, K, H, W] (the sums of the input's and the weight's codes) -> float32."""
    return te.compute(acc.shape, lambda n, k, h, w: acc[n, k, h, w].astype("float32")
                      * (weight_scale[k] * tirx.const(scale, "float32")), name=DEQUANTIZE_BLOCK)
