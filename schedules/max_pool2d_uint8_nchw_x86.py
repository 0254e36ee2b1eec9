"""max_pool2d_uint8_nchw_x86: 2-D max pool of uint8 codes between int8 convs (``passes/int8_requantize``), NCHW.

A TIR function written out: LLVM does not vectorize TVM's legalized pool on bytes (a stride-2 byte read is a
gather to its cost model), so each window column is read as a contiguous load and its every other byte kept by
a shuffle:

    parallel (n, c, y)
      kh: input row y*sh + kh - top, copied behind its left padding (zeros: the lowest code)
      16 output columns a step: max over kh, kw of bytes kw + sw*i of the padded row   (Shuffle of one load)
      the tail column by column
"""
from __future__ import annotations

from tvm.script import tirx as T

from tvm_patterns.sparsity.int8_block import window_out_hw

LANES = 16


def max_pool2d_uint8_nchw_x86(n: int, c: int, h: int, w: int, pool: tuple, strides: tuple, padding: tuple):
    """PrimFunc(x uint8 [N, C, H, W]) -> uint8 [N, C, Ho, Wo]: the max over each window, the padding 0."""
    (kh_, kw_), (sh, sw), (pt, pl, _, _) = pool, strides, padding
    ho, wo = window_out_hw(h, w, pool, strides, padding)
    vec_o, vec_w = wo // LANES * LANES, w // LANES * LANES
    wp = sw * (vec_o + LANES) + kw_ + LANES       # a padded row: every vector load of the steps stays inside
    keep = list(range(0, sw * LANES, sw))

    def window_max(row, v):
        m = None
        for i in range(kh_):
            for j in range(kw_):
                load = row[T.ramp(i * wp + v * sw * LANES + j, 1, sw * LANES)]
                part = load if sw == 1 else T.Shuffle([load], keep)
                m = part if m is None else T.max(m, part)
        return m

    @T.prim_func(private=True, s_tir=True)   # a root block: Relax's reshape analysis reads one-input functions
    def pool_max(x: T.Buffer((n, c, h, w), "uint8"), out: T.Buffer((n, c, ho, wo), "uint8")):
        T.func_attr({"tir.noalias": True})
        with T.sblock("root"):
            for q in T.parallel(n * c * ho):
                y: T.int32 = q % ho
                nc: T.int32 = q // ho
                row = T.decl_buffer((kh_ * wp,), "uint8", scope="local")
                for i in T.serial(kh_):
                    r: T.int32 = y * sh + i - pt
                    if 0 <= r and r < h:
                        for j in T.serial(pl):
                            row[i * wp + j] = T.uint8(0)
                        for v in T.serial(w // LANES):
                            row[T.ramp(i * wp + pl + v * LANES, 1, LANES)] = x[nc // c, nc % c, r, T.ramp(v * LANES, 1, LANES)]
                        for j in T.serial(w - vec_w):
                            row[i * wp + pl + vec_w + j] = x[nc // c, nc % c, r, vec_w + j]
                        for j in T.serial(wp - pl - w):
                            row[i * wp + pl + w + j] = T.uint8(0)
                    else:
                        for j in T.serial(wp):
                            row[i * wp + j] = T.uint8(0)
                for v in T.serial(wo // LANES):
                    out[nc // c, nc % c, y, T.ramp(v * LANES, 1, LANES)] = window_max(row, v)
                for z in T.serial(wo - vec_o):
                    m = T.decl_buffer((1,), "uint8")
                    m[0] = T.uint8(0)
                    for i, j in T.grid(kh_, kw_):
                        m[0] = T.max(m[0], row[i * wp + (vec_o + z) * sw + j])
                    out[nc // c, nc % c, y, vec_o + z] = m[0]

    return pool_max
