"""Pattern-sparse 3x3 conv2d, NCHW, as a TE compute over flat-offset kernel tables.

    out[n, k, h, w] = sum_{j < max_len, t < taps} value[k, j, t] * pad[n, offset[k, j, t] + h*sh*row + w*sw]

``pad`` is the zero-padded input of each image flattened to [C * Hp * row]; a kernel's tap is one
table offset away, so the inner loops run over contiguous input rows (vector loads along w) with
one offset and one weight per tap shared by a whole register tile. Rows of the tables past
``length[k]`` hold zeros; the schedule may stop the j loop at ``length[k]`` instead of running them.
The output width is computed rounded up to the vector width and cropped, so vector loops never
need a remainder.
"""
from __future__ import annotations

from dataclasses import dataclass

from tvm import te

MAIN_BLOCK = "pattern_conv2d"
PAD_BLOCK = "pattern_conv2d_pad"
CROP_BLOCK = "pattern_conv2d_crop"


@dataclass(frozen=True)
class PatternConvGeometry:
    """Shapes of one pattern conv: input [N, C, H, W] -> output [N, K, Ho, Wo]."""

    N: int
    C: int
    H: int
    W: int
    K: int
    strides: tuple = (1, 1)
    padding: tuple = (1, 1, 1, 1)     # top, left, bottom, right
    vector_width: int = 8

    @property
    def out_hw(self) -> tuple:
        pt, pl, pb, pr = self.padding
        sh, sw = self.strides
        return (self.H + pt + pb - 3) // sh + 1, (self.W + pl + pr - 3) // sw + 1

    @property
    def out_w_padded(self) -> int:
        wo, v = self.out_hw[1], self.vector_width
        return -(-wo // v) * v

    @property
    def padded_h(self) -> int:
        return self.H + self.padding[0] + self.padding[2]

    @property
    def row(self) -> int:
        """Row pitch of the padded input: wide enough for the rounded-up output width."""
        return max(self.W + self.padding[1] + self.padding[3], self.strides[1] * (self.out_w_padded - 1) + 3)

    @property
    def plane(self) -> int:
        return self.padded_h * self.row


def pattern_conv2d(data: te.Tensor, length: te.Tensor, offset: te.Tensor, value: te.Tensor,
                   geom: PatternConvGeometry, out_dtype: str = "float32") -> te.Tensor:
    """data [N, C, H, W]; length [K] int32; offset, value [K, max_len, taps] -> [N, K, Ho, Wo]."""
    N, C, H, W = geom.N, geom.C, geom.H, geom.W
    pt, pl = geom.padding[0], geom.padding[1]
    sh, sw = geom.strides
    row, plane = geom.row, geom.plane
    Ho, Wo = geom.out_hw
    Wp = geom.out_w_padded
    K, max_len, taps = (int(x) for x in offset.shape)

    def pad_body(n, i):
        c, y, x = i // plane, (i % plane) // row, i % row
        inside = te.all(y >= pt, y < pt + H, x >= pl, x < pl + W)
        return te.if_then_else(inside, data[n, c, y - pt, x - pl], te.const(0, data.dtype))

    pad = te.compute((N, C * plane), pad_body, name=PAD_BLOCK, attrs={"row": row, "plane": plane})
    j = te.reduce_axis((0, max_len), "j")
    t = te.reduce_axis((0, taps), "t")
    out = te.compute(
        (N, K, Ho, Wp),
        lambda n, k, h, w: te.sum(
            te.if_then_else(
                j < length[k],
                value[k, j, t].astype(out_dtype) * pad[n, offset[k, j, t] + h * (sh * row) + w * sw].astype(out_dtype),
                te.const(0, out_dtype)),
            axis=[j, t]),
        name=MAIN_BLOCK)
    if Wp == Wo:
        return out
    return te.compute((N, K, Ho, Wo), lambda n, k, h, w: out[n, k, h, w], name=CROP_BLOCK)
