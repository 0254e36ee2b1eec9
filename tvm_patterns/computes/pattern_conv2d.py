"""Pattern-sparse 3x3 conv2d, NCHW, as TE computes over kernel tables (two implementations).

Offset tables (``pattern_conv2d``, every target):

    out[n, k, h, w] = sum_{j < max_len, t < taps} value[k, j, t] * pad[n, lead + offset[k, j, t] + h*sh*row + w*w_step]

Per-pattern code (``pattern_conv2d_by_pattern``, host CPUs): each filter's kernels grouped by pattern,

    out[n, k, h, w] = sum_{p < P, j < max_len_p, t < taps}
                      value[k, p, j, t] * pad[n, lead + channel[k, p, j] + TAP[p, t] + h*sh*row + w*w_step]

where TAP[p, t] = kh * row + columns[kw] is a compile-time constant once the p and t loops are
unrolled: the taps of one pattern that read the same input line for different output rows of a
register tile become one load (PatDNN's pattern-specific code), and a kernel costs one offset load, not one per tap.

``pad`` is the zero-padded input of each image flattened to [C * Hp * row] (``lead`` is 0 unless
the rows are aligned, below); a kernel's tap is one table offset away, so the inner loops run over
contiguous input rows (vector loads along w) with one offset and one weight per tap shared by a
whole register tile. Rows of the tables past ``length[k]`` (``length[k, p]``) hold zeros; the
schedule may stop the j loop there instead of running them. The output width is computed rounded up
to the vector width and cropped, so vector loops never need a remainder.

Stride-2 rows are deinterleaved (even columns, then odd ones), so consecutive output columns read
consecutive elements (``w_step`` 1): tap column kw starts at ``columns[kw]`` = 0, row / 2, 1.

With ``align`` (stride-1 rows), the row pitch is a multiple of ``align`` and the flat image starts
``lead = align - 1`` elements into its buffer, so the middle column of taps (kw = 1, 18 of the 32
taps of PatDNN's library) loads aligned vectors; the ``lead`` elements before a row are the zero
right padding of the row above, and the buffer has one spare row at its end for the last row's.
Deinterleaved rows are aligned by making each half a multiple of ``align`` (kw = 0 and 1 aligned).
"""
from __future__ import annotations

from dataclasses import dataclass

from tvm import te, tirx

MAIN_BLOCK = "pattern_conv2d"
BY_PATTERN_BLOCK = "pattern_conv2d_by_pattern"
FILTER_BLOCK_BLOCK = "filter_block_pattern_conv2d"
DEPTHWISE_BLOCK = "depthwise_pattern_conv2d"
DEPTHWISE_PAD_BLOCK = "depthwise_pattern_conv2d_pad"
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
    align: int = 0                    # elements the rows are aligned to (0: rows packed)
    row_tile: int = 1                 # output rows are computed in whole tiles of this many (then cropped)

    def __post_init__(self):
        if self.align and self.strides[1] not in (1, 2):
            raise ValueError(f"aligned input rows need stride 1 or 2 along the width, not {self.strides[1]}")

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
    def out_h_padded(self) -> int:
        """Output rows computed: the output height rounded up to whole row tiles."""
        return -(-self.out_hw[0] // self.row_tile) * self.row_tile

    @property
    def padded_h(self) -> int:
        """Rows of the padded input plane: the zero padding and, for rows computed past the output
        height, the zero rows they read."""
        return max(self.H + self.padding[0] + self.padding[2], (self.out_h_padded - 1) * self.strides[0] + 3)

    @property
    def deinterleaved(self) -> bool:
        """Stride-2 rows hold their even columns, then their odd ones (each half ``row // 2`` long)."""
        return self.strides[1] == 2

    @property
    def lead(self) -> int:
        """Elements of the padded buffer before the first row (aligned stride-1 rows only)."""
        return self.align - 1 if self.align and not self.deinterleaved else 0

    @property
    def row(self) -> int:
        """Row pitch of the padded input: wide enough for the rounded-up output width; with ``align``
        a multiple of it (of twice it, deinterleaved), with at least ``lead`` zeros after each row's data."""
        pitch = max(self.W + self.padding[1] + self.padding[3], self.strides[1] * (self.out_w_padded - 1) + 3)
        if self.deinterleaved:
            half = -(-pitch // 2)
            return 2 * (-(-half // self.align) * self.align if self.align else half)
        if not self.align:
            return pitch
        return -(-max(pitch, self.padding[1] + self.W + self.lead) // self.align) * self.align

    @property
    def columns(self) -> tuple:
        """Offset inside a row of tap column kw = 0, 1, 2 for output column 0."""
        return (0, self.row // 2, 1) if self.deinterleaved else (0, 1, 2)

    @property
    def w_step(self) -> int:
        """Elements between the inputs of consecutive output columns (1 where deinterleaved)."""
        return 1 if self.deinterleaved else self.strides[1]

    @property
    def plane(self) -> int:
        return self.padded_h * self.row

    @property
    def pad_size(self) -> int:
        """Elements of one image's padded buffer: lead, C planes and (aligned) a spare row."""
        return self.C * self.plane + (self.row if self.lead else 0)


def padded_input(data: te.Tensor, geom: PatternConvGeometry) -> te.Tensor:
    """[N, pad_size]: each image zero-padded and flattened with the geometry's row pitch (and lead)."""
    C, H, W = geom.C, geom.H, geom.W
    pt, pl = geom.padding[0], geom.padding[1]
    row, plane, lead = geom.row, geom.plane, geom.lead

    def pad_body(n, i):
        c, y, at = i // plane, (i % plane) // row, i % row
        half = row // 2
        x = 2 * (at % half) + at // half if geom.deinterleaved else at - lead
        inside = te.all(c < C, y >= pt, y < pt + H, x >= pl, x < pl + W)
        return te.if_then_else(inside, data[n, c, y - pt, x - pl], te.const(0, data.dtype))

    return te.compute((geom.N, geom.pad_size), pad_body, name=PAD_BLOCK,
                      attrs={"row": row, "plane": plane, "lead": lead, "deinterleaved": int(geom.deinterleaved)})


def cropped(out: te.Tensor, geom: PatternConvGeometry) -> te.Tensor:
    """``out`` [N, K or more, Ho, Wp] cropped to the K filters and the real output width (itself when
    nothing is cropped)."""
    Ho, Wo = geom.out_hw
    if tuple(int(x) for x in out.shape[1:]) == (geom.K, Ho, Wo):
        return out
    return te.compute((geom.N, geom.K, Ho, Wo), lambda n, k, h, w: out[n, k, h, w], name=CROP_BLOCK)


def pattern_conv2d(data: te.Tensor, length: te.Tensor, offset: te.Tensor, value: te.Tensor,
                   geom: PatternConvGeometry, out_dtype: str = "float32") -> te.Tensor:
    """data [N, C, H, W]; length [K] int32; offset, value [K, max_len, taps] -> [N, K, Ho, Wo]."""
    sh = geom.strides[0]
    pad = padded_input(data, geom)
    Ho, _ = geom.out_hw
    K, max_len, taps = (int(x) for x in offset.shape)
    j = te.reduce_axis((0, max_len), "j")
    t = te.reduce_axis((0, taps), "t")
    out = te.compute(
        (geom.N, K, Ho, geom.out_w_padded),
        lambda n, k, h, w: te.sum(
            te.if_then_else(
                j < length[k],
                value[k, j, t].astype(out_dtype) * pad[n, geom.lead + offset[k, j, t] + h * (sh * geom.row) + w * geom.w_step].astype(out_dtype),
                te.const(0, out_dtype)),
            axis=[j, t]),
        name=MAIN_BLOCK)
    return cropped(out, geom)


def _tap_constant(taps: list, p, t):
    """TAP[p, t] as a select chain over constants: folds to one constant once p and t are unrolled."""
    expr = None
    for q in reversed(range(len(taps))):
        for s in reversed(range(len(taps[q]))):
            c = tirx.const(int(taps[q][s]), "int32")
            expr = c if expr is None else tirx.Select(tirx.all(p == q, t == s), c, expr)
    return expr


def pattern_conv2d_by_pattern(data: te.Tensor, length: te.Tensor, channel: te.Tensor, value: te.Tensor,
                              geom: PatternConvGeometry, taps: tuple, out_dtype: str = "float32") -> te.Tensor:
    """data [N, C, H, W]; length [K, P] int32; channel [K, P, max_len] int32 (input channel * plane);
    value [K, P, max_len, T]; taps [P][T]: flat offsets kh * row + columns[kw] of each pattern's taps."""
    sh = geom.strides[0]
    pad = padded_input(data, geom)
    Ho, _ = geom.out_hw
    K, P, max_len, T = (int(x) for x in value.shape)
    if len(taps) != P or any(len(row) != T for row in taps):
        raise ValueError(f"taps must be [{P}][{T}] (patterns x taps), got {[len(r) for r in taps]}")
    p = te.reduce_axis((0, P), "p")
    j = te.reduce_axis((0, max_len), "j")
    t = te.reduce_axis((0, T), "t")
    out = te.compute(
        (geom.N, K, Ho, geom.out_w_padded),
        lambda n, k, h, w: te.sum(
            te.if_then_else(
                j < length[k, p],
                value[k, p, j, t].astype(out_dtype)
                * pad[n, geom.lead + channel[k, p, j] + _tap_constant(taps, p, t) + h * (sh * geom.row) + w * geom.w_step].astype(out_dtype),
                te.const(0, out_dtype)),
            axis=[p, j, t]),
        name=BY_PATTERN_BLOCK)
    return cropped(out, geom)


def filter_block_pattern_conv2d(data: te.Tensor, length: te.Tensor, offset: te.Tensor, value: te.Tensor,
                                geom: PatternConvGeometry, out_dtype: str = "float32", skip: bool = True) -> te.Tensor:
    """data [N, C, H, W]; length [B] int32; offset [B, max_len, taps] int32; value [B, max_len, taps, F]
    (``sparsity.filter_block``: the F filters of block b share its kernels) -> [N, K, Ho, Wo]:

        out[n, k, h, w] = sum_{j < length[k // F], t} value[k // F, j, t, k % F]
                          * pad[n, lead + offset[k // F, j, t] + h*sh*row + w*w_step]

    computed for B * F filters (the last block padded with zero filters) and ``out_h_padded`` rows
    (whole row tiles), then cropped to K filters and Ho rows. ``skip``: the kernels past ``length``
    (offset 0, value 0) are skipped by a condition around each product (CPUs branch over them);
    without it they are multiplied by their zero weights (GPUs: a condition around the input load
    keeps the F filters of a work item from sharing it)."""
    sh = geom.strides[0]
    pad = padded_input(data, geom)
    B, max_len, taps, F = (int(x) for x in value.shape)

    def guarded(cond, product):
        return te.if_then_else(cond, product, te.const(0, out_dtype)) if skip else product

    j = te.reduce_axis((0, max_len), "j")
    t = te.reduce_axis((0, taps), "t")
    out = te.compute(
        (geom.N, B * F, geom.out_h_padded, geom.out_w_padded),
        lambda n, k, h, w: te.sum(
            guarded(j < length[k // F],
                    value[k // F, j, t, k % F].astype(out_dtype)
                    * pad[n, geom.lead + offset[k // F, j, t] + h * (sh * geom.row) + w * geom.w_step].astype(out_dtype)),
            axis=[j, t]),
        name=FILTER_BLOCK_BLOCK, attrs={"filters": F, "rows": geom.row_tile})
    return cropped(out, geom)


def depthwise_pattern_conv2d(data: te.Tensor, offset: te.Tensor, value: te.Tensor, geom: PatternConvGeometry,
                             out_dtype: str = "float32") -> te.Tensor:
    """A depthwise conv, each channel its own taps: data [N, C, H, W]; offset, value [C, taps] (a tap's
    flat offset ``kh * row + columns[kw]`` in its channel's padded plane, zeros past a kernel's taps)
    -> [N, C, Ho, Wo].

    The padded input is a plane per channel, [N, C, padded_h, row] (stride-2 rows deinterleaved), so
    that a schedule can make each channel's plane where it is used instead of a copy of the whole
    input; the tap row and column are clamped to the plane (a no-op on valid tables) so that the
    plane a channel reads has static bounds."""
    N, C, H, W = geom.N, geom.C, geom.H, geom.W
    pt, pl = geom.padding[0], geom.padding[1]
    row, half, sh = geom.row, geom.row // 2, geom.strides[0]
    last_column = row - 1 - (geom.out_w_padded - 1) * geom.w_step

    def pad_body(n, c, y, at):
        x = 2 * (at % half) + at // half if geom.deinterleaved else at
        inside = te.all(y >= pt, y < pt + H, x >= pl, x < pl + W)
        return te.if_then_else(inside, data[n, c, y - pt, x - pl], te.const(0, data.dtype))

    pad = te.compute((N, C, geom.padded_h, row), pad_body, name=DEPTHWISE_PAD_BLOCK,
                     attrs={"deinterleaved": int(geom.deinterleaved)})
    t = te.reduce_axis((0, int(offset.shape[1])), "t")

    def body(n, c, h, w):
        ky = tirx.min(tirx.max(offset[c, t] // row, 0), 2)
        kx = tirx.min(tirx.max(offset[c, t] % row, 0), last_column)
        return te.sum(value[c, t].astype(out_dtype) * pad[n, c, h * sh + ky, kx + w * geom.w_step].astype(out_dtype),
                      axis=t)

    out = te.compute((N, C, geom.out_h_padded, geom.out_w_padded), body, name=DEPTHWISE_BLOCK)
    return cropped(out, geom)
