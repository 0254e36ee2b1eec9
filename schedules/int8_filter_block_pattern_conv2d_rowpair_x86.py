"""int8_filter_block_pattern_conv2d_rowpair_x86: int8 filter-block pattern conv for AVX-512 VNNI.

A TIR kernel written out (no TE stage can hold the data-dependent byte gather): per block of F filters
and register tile of ROWS output rows x GROUPS groups of 16 positions,

    parallel (n, block)
      row tile, group tile
        j < length[block]             -- the block's kernels: channel c, pattern p
          index = idx[p]              -- the pattern's vpermi2b index (64 bytes)
          ROWS x GROUPS (unrolled)
            v = vpermi2b(rowpair[c, h], index, rowpair[c, h + 2])   -- 16 positions x 4 taps, u8
                (stride 2: the two halves of record[c, h])
            F (unrolled): acc[f] = vpdpbusd(acc[f], v, broadcast(value[block, j, f]))
        write-back: acc + bias (int32), the tail of a row lane by lane

Each gathered vector does 64 MACs for each of the F filters: one byte shuffle per F ``vpdpbusd``
where the float filter-block kernel spends an FMA per 16 MACs (``sparsity/int8_filter_block``
describes the layout). Exact integer arithmetic: the int32 sums of u8 x s8 products.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from tvm.script import tirx as T
from tvm.target import Target, codegen

from tvm_patterns.computes.int8_quantization import requantized_codes
from tvm_patterns.sparsity.int8_block import window_out_hw
from tvm_patterns.sparsity.int8_filter_block import LANES, records_shape, rowpair_shape

# The int32 accumulators of a tile, F x ROWS x GROUPS zmm registers, beside the F broadcast weights,
# the index, two row-pair tables and the gathered vector: 32 zmm in all.
MAX_ACCUMULATORS = 24
L2_HALF = 1 << 20   # bytes


# vpdpbusd (AVX512-VNNI) and vpermi2b (AVX512-VBMI): Ice Lake and later, Zen 4 and later.
FEATURES = ("avx512vnni", "avx512vbmi")


def missing_features(target: Target) -> list[str]:
    """The instruction sets the kernel needs that ``target`` lacks."""
    return [f for f in FEATURES if not codegen.target_has_features(f, target)]


@dataclass(frozen=True)
class Knobs:
    rows: int = 1     # output rows of a register tile
    groups: int = 1   # groups of 16 output positions of a register tile row
    blocks_inner: bool = False  # parallel loop order: row tiles, then blocks (False: blocks, then row tiles)
    stride: int = 1   # the conv's (both axes): 1 reads row pairs, 2 stride-2 records


def input_shape(n: int, c: int, h: int, w: int, knobs: Knobs) -> tuple:
    """The shape of the input the kernel reads for an h x w input: row pairs, or stride-2 records."""
    return (rowpair_shape if knobs.stride == 1 else records_shape)(n, c, h, w, knobs.rows, knobs.groups)


def out_hw(h: int, w: int, stride: int) -> tuple[int, int]:
    """The output rows and columns of the conv over an h x w input."""
    return window_out_hw(h, w, (3, 3), (stride, stride), (1, 1, 1, 1))


def default_knobs(filters: int, channels: int, h: int, w: int, stride: int = 1) -> Knobs:
    """The tile with the fewest padded positions per kernel step, then the most accumulators (each
    kernel step loads the pattern's index and the F weights once for the whole tile); blocks inner
    when the input it reads does not fit half a core's L2 (docs/design.md#int8-filter-block). h, w:
    the input's."""
    out_h, out_w = out_hw(h, w, stride)
    groups_in_row = -(-out_w // LANES)
    best = None
    for groups in range(1, groups_in_row + 1):
        for rows in range(1, out_h + 1):
            acc = filters * rows * groups
            if acc > MAX_ACCUMULATORS:
                break
            padded = -(-out_h // rows) * rows * (-(-groups_in_row // groups) * groups)
            cost = padded * (1 + 2 / acc)
            if best is None or cost < best[0]:
                best = (cost, Knobs(rows, groups))
    knobs = dataclasses.replace(best[1] if best else Knobs(), stride=stride)
    big = math.prod(input_shape(1, channels, h, w, knobs)) > L2_HALF
    return dataclasses.replace(knobs, blocks_inner=big)


def int8_filter_block_pattern_conv2d_rowpair_x86(n: int, c: int, h: int, w: int, k: int, blocks: int, filters: int,
                                                 max_len: int, patterns: int, knobs: Knobs, requantize: bool = False):
    """PrimFunc(rowpair u8 [input_shape], length [B], channel [B, L], pattern [B, L], value [B, L, F],
    index u8 [P, 64], bias [B*F] int32) -> out int32 [N, K, Ho, Wo]: out = conv(x, w) + bias, where the
    row pairs (stride 2: records) hold the h x w input x (its padding at the zero point: fold
    -zero_point * sum(w) into the bias).

    ``requantize``: two more inputs, scale float32 [B*F, 2] and grid float32 [3], and out uint8: the
    sums requantized onto the next layer's grid in the write-back (``requantized_codes``)."""
    rows, groups, stride = knobs.rows, knobs.groups, knobs.stride
    if stride not in (1, 2):
        raise NotImplementedError(f"the int8 filter-block kernel runs stride 1 or 2, not {stride}")
    shape = input_shape(n, c, h, w, knobs)
    h, w = out_hw(h, w, stride)     # from here on, the output's
    tiles_h, tiles_w = (shape[2] - (2 if stride == 1 else 0)) // rows, shape[3] // groups
    second, half = (2, 0) if stride == 1 else (0, 64)   # the second table: two rows on, or the record's second half
    tile = filters * rows * groups
    F = filters
    step_b, step_h = (1, blocks) if knobs.blocks_inner else (tiles_h, 1)

    @T.macro
    def conv(X, length, channel, pattern, value, index, bias, scale, grid, out):
        for q in T.parallel(n * tiles_h * blocks):
            # blocks inner: the threads split the rows, each tile's input rows read by every block from L2
            b: T.int32 = q // step_b % blocks
            th: T.int32 = q // step_h % tiles_h
            nn: T.int32 = q // (blocks * tiles_h)
            for tw in T.serial(tiles_w):
                acc = T.decl_buffer((tile * LANES,), "int32", scope="local")
                for a in T.unroll(tile):
                    acc[T.ramp(a * LANES, 1, LANES)] = T.broadcast(T.int32(0), LANES)
                for j in T.serial(length[b]):
                    ch: T.int32 = channel[b, j]
                    ix: T.uint8x64 = index[pattern[b, j], T.ramp(0, 1, 64)]
                    for r in T.unroll(rows):
                        for g in T.unroll(groups):
                            v: T.uint8x64 = T.call_llvm_pure_intrin(
                                "uint8x64", "llvm.x86.avx512.vpermi2var.qi.512",
                                X[nn, ch, th * rows + r, tw * groups + g, T.ramp(0, 1, 64)], ix,
                                X[nn, ch, th * rows + r + second, tw * groups + g, T.ramp(half, 1, 64)])
                            for f in T.unroll(F):
                                acc[T.ramp(((f * rows + r) * groups + g) * LANES, 1, LANES)] = T.call_llvm_pure_intrin(
                                    "int32x16", "llvm.x86.avx512.vpdpbusd.512",
                                    acc[T.ramp(((f * rows + r) * groups + g) * LANES, 1, LANES)], v,
                                    T.reinterpret(T.broadcast(value[b, j, f], LANES), dtype="int8x64"))
                for f in T.unroll(F):
                    for r in T.unroll(rows):
                        for g in T.unroll(groups):
                            if (b) * F + f < k and th * rows + r < h:
                                if (tw * groups + g) * LANES + LANES <= w:
                                    sums = (acc[T.ramp(((f * rows + r) * groups + g) * LANES, 1, LANES)]
                                            + T.broadcast(bias[(b) * F + f], LANES))
                                    out[nn, (b) * F + f, th * rows + r, T.ramp((tw * groups + g) * LANES, 1, LANES)] = (
                                        requantized_codes(sums, scale, grid, (b) * F + f, LANES) if requantize else sums)
                                else:
                                    for i in T.serial(T.max(0, w - (tw * groups + g) * LANES)):
                                        sums = acc[((f * rows + r) * groups + g) * LANES + i] + bias[(b) * F + f]
                                        out[nn, (b) * F + f, th * rows + r, (tw * groups + g) * LANES + i] = (
                                            requantized_codes(sums, scale, grid, (b) * F + f, 1) if requantize else sums)

    if requantize:
        @T.prim_func(private=True)
        def kernel(X: T.Buffer(shape, "uint8"), length: T.Buffer((blocks,), "int32"),
                   channel: T.Buffer((blocks, max_len), "int32"), pattern: T.Buffer((blocks, max_len), "int32"),
                   value: T.Buffer((blocks, max_len, filters), "int32"), index: T.Buffer((patterns, 64), "uint8"),
                   bias: T.Buffer((blocks * filters,), "int32"), scale: T.Buffer((blocks * filters, 2), "float32"),
                   grid: T.Buffer((3,), "float32"), out: T.Buffer((n, k, h, w), "uint8")):
            T.func_attr({"tir.noalias": True})
            conv(X, length, channel, pattern, value, index, bias, scale, grid, out)
    else:
        @T.prim_func(private=True)
        def kernel(X: T.Buffer(shape, "uint8"), length: T.Buffer((blocks,), "int32"),
                   channel: T.Buffer((blocks, max_len), "int32"), pattern: T.Buffer((blocks, max_len), "int32"),
                   value: T.Buffer((blocks, max_len, filters), "int32"), index: T.Buffer((patterns, 64), "uint8"),
                   bias: T.Buffer((blocks * filters,), "int32"), out: T.Buffer((n, k, h, w), "int32")):
            T.func_attr({"tir.noalias": True})
            conv(X, length, channel, pattern, value, index, bias, None, None, out)

    return kernel
