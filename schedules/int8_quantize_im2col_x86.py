"""int8_quantize_im2col_x86: float input -> the uint8 codes of a dense conv's patches, which the int8 1x1 kernel
(``int8_block_sparse_conv2d_1x1_x86`` with ``patches``) multiplies as a 1x1 conv of C*KH*KW channels; the
layout is ``sparsity/int8_block.pack_patches``'s: quads of 4 patch codes interleaved a position.

A TIR function written out, in two parallel loops:

    parallel (n, c, padded row)     -- the input on the grid, padded at the zero point: 16 codes a vector
    parallel (n, quad, y)           -- 16 positions a step: the 4 codes of each tap of the quad (stride 2: 32
                                       loaded, every other one kept), interleaved into 64 bytes; then the tail
"""
from __future__ import annotations

from tvm.script import tirx as T

from tvm_patterns.sparsity.int8_block import patches_shape

LANES = 16


def int8_quantize_im2col_x86(n: int, c: int, h: int, w: int, kernel: tuple, strides: tuple, padding: tuple,
                             codes: bool = False):
    """PrimFunc(x float32 [N, C, H, W], grid float32 [2] = (1 / scale, zero point)) -> uint8 [``patches_shape``]:
    the codes clip(floor(x * (1 / scale) + 0.5) + zero_point, 0, 255) of each patch, the padding (and the taps
    past C*KH*KW) at the zero point. ``codes``: x is uint8, already on the grid (written by the previous int8
    conv), and is only laid out."""
    (kh_, kw_), (sh, sw), (pt, pl, _, _) = kernel, strides, padding
    if sw not in (1, 2):
        raise NotImplementedError(f"the int8 patch layout takes column stride 1 or 2, not {sw}")
    shape = patches_shape(n, c, h, w, kernel, strides, padding)
    quads, ho, wo = shape[1], shape[2], shape[3] // 4
    hp = (ho - 1) * sh + kh_                               # padded rows the patches read
    vec_w, vec_o = w // LANES * LANES, wo // LANES * LANES
    wp = kw_ + sw * (vec_o + LANES) + LANES               # a vector load past the last patch stays in the row
    taps = c * kh_ * kw_
    # lane 4i + t of the 64 bytes: position i of tap t, every sw-th byte of the tap's load
    interleave = [t * sw * LANES + sw * i for i in range(LANES) for t in range(4)]
    spare = n * c * hp * wp                                # a row at the zero point: the taps past C*KH*KW read it

    def patch_row(nn, tap, y):
        """Where tap ``tap``'s codes of output row y start in pad."""
        t = T.min(tap, taps - 1)
        return T.Select(tap < taps, ((nn * c + t // (kh_ * kw_)) * hp + y * sh + t // kw_ % kh_) * wp + t % kw_, spare)

    def gathered(pad, nn, qd, y, v):
        """Positions 16v .. 16v + 15 of output row y, the 4 codes of quad qd each, interleaved."""
        return T.Shuffle([pad[T.ramp(patch_row(nn, qd * 4 + t, y) + v * sw * LANES, 1, sw * LANES)] for t in range(4)],
                         interleave)

    @T.prim_func(private=True)
    def im2col(x: T.Buffer((n, c, h, w), "uint8" if codes else "float32"), grid: T.Buffer((2,), "float32"),
               out: T.Buffer(shape, "uint8")):
        T.func_attr({"tir.noalias": True})
        pad = T.alloc_buffer((spare + wp,), "uint8")
        for j in T.serial(wp):
            pad[spare + j] = T.Cast("uint8", grid[1])
        for q in T.parallel(n * c * hp):
            nc: T.int32 = q // hp
            r: T.int32 = q % hp
            zp: T.uint8 = T.Cast("uint8", grid[1])
            row: T.int32 = q * wp
            if pt <= r and r < pt + h:
                for j in T.serial(pl):
                    pad[row + j] = zp
                for v in T.serial(w // LANES):
                    if codes:
                        pad[T.ramp(row + pl + v * LANES, 1, LANES)] = x[nc // c, nc % c, r - pt, T.ramp(v * LANES, 1, LANES)]
                    else:
                        pad[T.ramp(row + pl + v * LANES, 1, LANES)] = T.Cast("uint8x16", T.max(T.min(
                            T.floor(x[nc // c, nc % c, r - pt, T.ramp(v * LANES, 1, LANES)] * T.broadcast(grid[0], LANES)
                                    + T.broadcast(T.float32(0.5), LANES)) + T.broadcast(grid[1], LANES),
                            T.broadcast(T.float32(255.0), LANES)), T.broadcast(T.float32(0.0), LANES)))
                for j in T.serial(w - vec_w):
                    if codes:
                        pad[row + pl + vec_w + j] = x[nc // c, nc % c, r - pt, vec_w + j]
                    else:
                        pad[row + pl + vec_w + j] = T.Cast("uint8", T.max(T.min(
                            T.floor(x[nc // c, nc % c, r - pt, vec_w + j] * grid[0] + T.float32(0.5)) + grid[1],
                            T.float32(255.0)), T.float32(0.0)))
                for j in T.serial(wp - pl - w):
                    pad[row + pl + w + j] = zp
            else:
                for j in T.serial(wp):
                    pad[row + j] = zp
        for q in T.parallel(n * quads * ho):
            y: T.int32 = q % ho
            qd: T.int32 = q // ho % quads
            nn: T.int32 = q // (ho * quads)
            for v in T.serial(wo // LANES):
                out[nn, qd, y, T.ramp(v * 4 * LANES, 1, 4 * LANES)] = gathered(pad, nn, qd, y, v)
            for j, t in T.grid(wo - vec_o, 4):
                out[nn, qd, y, (vec_o + j) * 4 + t] = pad[patch_row(nn, qd * 4 + t, y) + (vec_o + j) * sw]

    return im2col

