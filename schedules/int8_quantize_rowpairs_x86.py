"""int8_quantize_rowpairs_x86: float input -> uint8 row pairs of an int8 conv on host CPUs, and the
schedule of its dequantization.

The quantization is a TIR function written out: a TE stage with padding holds a condition per
column, which keeps TVM from vectorizing the row (the out-of-range load of a padding lane), so the
interior of each row is quantized in vectors of 16 and the padding written apart:

    parallel (n, c)
      r: the padded rows of the channel        -- interior: 16 codes a vector, then the tail; border: zero point
      r, g, s: 32 bytes a vector               -- the row pairs (stride 2: r, g, kh: 33 bytes, the records)
    dequantize:  parallel (n, k, h) | w_outer, w_inner (16, vectorized)   -- sums -> float, with its epilogue
"""
from __future__ import annotations

from tvm import s_tir
from tvm.script import tirx as T

from tvm_patterns.computes.int8_quantization import DEQUANTIZE_BLOCK
from tvm_patterns.sparsity.int8_filter_block import (AVX2_COLUMNS, AVX2_HALF, AVX2_LANES, AVX2_POSITIONS, HALF, LANES,
                                                     RECORD, STRIDE2_COLUMNS, records_shape, rowpair_avx2_shape,
                                                     rowpair_shape)

from .registry import FALLBACK, find_schedule, register_schedule

SPATIAL = 0  # IterVar.DataPar


def int8_quantize_rowpairs_x86(n: int, c: int, h: int, w: int, rows: int, groups: int, codes: bool = False,
                               avx2: bool = False, stride: int = 1):
    """PrimFunc(x float32 [N, C, H, W], grid float32 [2] = (1 / scale, zero point)) -> uint8 row pairs
    (``sparsity.int8_filter_block``): codes clip(floor(x * (1 / scale) + 0.5) + zero_point, 0, 255),
    the padding at the zero point. ``codes``: x is uint8, already on the grid (written by the previous
    int8 conv, ``passes/int8_requantize``), and is only laid out. ``avx2``: the AVX2 kernel's row pairs
    (``rowpair_avx2_shape``) instead of the VNNI one's; ``stride`` 2: the VNNI kernel's stride-2 records
    (``records_shape``)."""
    if stride == 2 and avx2:
        raise NotImplementedError("the AVX2 int8 kernel runs stride 1 only")
    layout = rowpair_avx2_shape if avx2 else rowpair_shape if stride == 1 else records_shape
    shape = layout(n, c, h, w, rows, groups)
    hp, g_ = (shape[1], shape[2]) if avx2 else (shape[2], shape[3])
    wp = g_ * AVX2_LANES + 2 if avx2 else g_ * LANES + HALF if stride == 1 else g_ * 2 * LANES + 1
    padded_rows = hp + 1 if stride == 1 else 2 * hp + 1
    vec = w // LANES * LANES

    @T.prim_func(private=True)
    def quantize(x: T.Buffer((n, c, h, w), "uint8" if codes else "float32"), grid: T.Buffer((2,), "float32"),
                 out: T.Buffer(shape, "uint8")):
        T.func_attr({"tir.noalias": True})
        for nc in T.parallel(n * c):
            pad = T.decl_buffer((padded_rows * wp,), "uint8")
            zp: T.uint8 = T.Cast("uint8", grid[1])
            for r in T.serial(padded_rows):
                if 1 <= r and r <= h:
                    pad[r * wp] = zp
                    for q0 in T.serial(w // LANES):
                        if codes:
                            pad[T.ramp(r * wp + 1 + q0 * LANES, 1, LANES)] = x[nc // c, nc % c, r - 1, T.ramp(q0 * LANES, 1, LANES)]
                        else:
                            pad[T.ramp(r * wp + 1 + q0 * LANES, 1, LANES)] = T.Cast("uint8x16", T.max(T.min(
                                T.floor(x[nc // c, nc % c, r - 1, T.ramp(q0 * LANES, 1, LANES)] * T.broadcast(grid[0], LANES)
                                        + T.broadcast(T.float32(0.5), LANES)) + T.broadcast(grid[1], LANES),
                                T.broadcast(T.float32(255.0), LANES)), T.broadcast(T.float32(0.0), LANES)))
                    for q in T.serial(w - vec):
                        if codes:
                            pad[r * wp + 1 + vec + q] = x[nc // c, nc % c, r - 1, vec + q]
                        else:
                            pad[r * wp + 1 + vec + q] = T.Cast("uint8", T.max(T.min(
                                T.floor(x[nc // c, nc % c, r - 1, vec + q] * grid[0] + T.float32(0.5)) + grid[1],
                                T.float32(255.0)), T.float32(0.0)))
                    for q in T.serial(wp - w - 1):
                        pad[r * wp + w + 1 + q] = zp
                else:
                    for q in T.serial(wp):
                        pad[r * wp + q] = zp
            if avx2:
                for r, g, s, k in T.grid(hp, g_, 2, 2):
                    out[nc // c, r, g, nc % c, T.ramp(s * AVX2_HALF + k * AVX2_COLUMNS, 1, AVX2_COLUMNS)] = pad[
                        T.ramp((r + k) * wp + g * AVX2_LANES + s * AVX2_POSITIONS, 1, AVX2_COLUMNS)]
                    if k == 1:
                        out[nc // c, r, g, nc % c, T.ramp(s * AVX2_HALF + 2 * AVX2_COLUMNS, 1, 4)] = T.broadcast(zp, 4)
            elif stride == 2:
                for r, g, kh in T.grid(hp, g_, 3):
                    out[nc // c, nc % c, r, g, T.ramp(kh * STRIDE2_COLUMNS, 1, STRIDE2_COLUMNS)] = pad[
                        T.ramp((2 * r + kh) * wp + g * 2 * LANES, 1, STRIDE2_COLUMNS)]
                for r, g in T.grid(hp, g_):
                    out[nc // c, nc % c, r, g, T.ramp(3 * STRIDE2_COLUMNS, 1, RECORD - 3 * STRIDE2_COLUMNS)] = \
                        T.broadcast(zp, RECORD - 3 * STRIDE2_COLUMNS)
            else:
                for r, g, s in T.grid(hp, g_, 2):
                    out[nc // c, nc % c, r, g, T.ramp(s * HALF, 1, HALF)] = pad[T.ramp((r + s) * wp + g * LANES, 1, HALF)]

    return quantize


def inline_all_but(sch: s_tir.Schedule, keep: set) -> bool:
    """Inline every other top-level elementwise block into its consumers; False when a block that is
    not elementwise (a reduction: a pool, or a float conv fused in beside) stays."""
    inlined = True
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        stmt = sch.get(block)
        if stmt.name_hint in keep:
            continue
        if stmt.init is not None or any(int(iv.iter_type) != SPATIAL for iv in stmt.iter_vars):
            inlined = False
        else:
            sch.compute_inline(block)
    return inlined


@register_schedule(DEQUANTIZE_BLOCK, "cpu")
def schedule_dequantize(sch: s_tir.Schedule, block, target) -> None:
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    last = sch.get(blocks[-1]).name_hint
    inlined = inline_all_but(sch, {last})
    block = sch.get_sblock(last)
    if inlined and all(int(iv.iter_type) == SPATIAL for iv in sch.get(block).iter_vars):
        loops = sch.get_loops(block)
        sch.parallel(sch.fuse(*loops[:-1]))
        _, inner = sch.split(loops[-1], [None, LANES])
        sch.vectorize(inner)
    else:   # a reduction after the epilogue (a pool) or beside it (a float conv it adds): the generic schedule
        find_schedule(FALLBACK, target)(sch, block, target)
