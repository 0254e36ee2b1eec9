"""A block-punched 1x1 conv and its activation fused into the depthwise pattern conv it feeds.

MobileNet-V2's blocks widen the activations by 6 with a 1x1 conv (expand) and run a depthwise conv
on the wide tensor; both make few MACs per byte. Fused, the expanded channels are made a block of
``R`` at a time (the 1x1 conv's block rows, which share their input columns) where the depthwise
conv pads them, so the wide tensor is never written out. The 1x1 conv runs over flat planes (the
input as [N, Cin, H * W]), so that its vectors need not fit in a row:

    expanded[n, c, p] = sum_{j < width} values[c // R, j, c % R] * data[n, col_idx[c // R, j], p]
    activated[n, c, y, x] = activation(expanded[n, c, y * W + x] + bias[c])      (ReLU6, ReLU or none)
    out = depthwise_pattern_conv2d(activated, offset, value, geom)
"""
from __future__ import annotations

from tvm import te, tirx

from .pattern_conv2d import PatternConvGeometry, depthwise_pattern_conv2d

EXPAND_BLOCK = "expand_depthwise_expand"
ACTIVATION_BLOCK = "expand_depthwise_activation"


def expand_depthwise_conv2d(data: te.Tensor, col_idx: te.Tensor, values: te.Tensor, bias: te.Tensor,
                            offset: te.Tensor, value: te.Tensor, geom: PatternConvGeometry,
                            clip: tuple | None = None) -> te.Tensor:
    """data [N, Cin, H * W] (the input's planes flat); col_idx [n_blocks, width] int32 and values
    [n_blocks, width, R] of the block-punched 1x1 conv (``geom.C`` output channels, whole blocks);
    bias [C]; ``clip`` (low, high) of the activation (high None: a ReLU) or None; offset, value
    [C, taps] of the depthwise conv -> [N, C, Ho, Wo]."""
    N, _, plane = (int(d) for d in data.shape)
    H, W = geom.H, geom.W
    n_blocks, width, R = (int(d) for d in values.shape)
    if (geom.N, H * W) != (N, plane) or geom.C != n_blocks * R:
        raise ValueError(f"a {n_blocks} x {R}-row 1x1 conv of a {list(data.shape)} input does not feed "
                         f"the depthwise conv of {geom}")
    j = te.reduce_axis((0, width), "j")
    expanded = te.compute(
        (N, geom.C, plane),
        lambda n, c, p: te.sum(values[c // R, j, c % R] * data[n, col_idx[c // R, j], p], axis=j),
        name=EXPAND_BLOCK, attrs={"block_rows": R})

    def activation(n, c, y, x):
        v = expanded[n, c, y * W + x] + bias[c]
        if clip is not None:
            v = tirx.max(v, tirx.const(clip[0], data.dtype))
            v = v if clip[1] is None else tirx.min(v, tirx.const(clip[1], data.dtype))
        return v

    activated = te.compute((N, geom.C, H, W), activation, name=ACTIVATION_BLOCK)
    return depthwise_pattern_conv2d(activated, offset, value, geom)
