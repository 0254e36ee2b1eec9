"""int8_filter_block_pattern_conv2d_rowpair_avx2: int8 filter-block pattern conv for x86 with AVX2 only.

The VNNI kernel's plan (``int8_filter_block_pattern_conv2d_rowpair_x86``) in ymm registers, without
vpdpbusd or a cross-lane byte permute: a ymm holds 8 output positions x 4 taps, each 128-bit lane 4
positions gathered by ``vpshufb`` from its lane of two AVX2 row pairs (rows h, h + 1 and h + 2, h + 3;
``sparsity.int8_filter_block.pack_rowpairs_avx2``), and the 4 products of a lane summed in two steps:

    parallel (n, block)
      row tile, group tile
        j < length[block]             -- the block's kernels: channel c, pattern p
          ROWS x GROUPS (unrolled)
            v = vpshufb(pair[c, h], index[p, 0]) | vpshufb(pair[c, h + 2], index[p, 1])
            F (unrolled): acc[f] += vpmaddwd(vpmaddubsw(v, broadcast(value[block, j, f])), 1)
        write-back: acc + bias (int32), the tail of a row lane by lane

``vpmaddubsw`` adds two u8 x s8 products into a saturating int16: exact while the two weights of a
pair add up to at most 128 in magnitude (``MAX_PAIR``), which the int8 kind ensures (codes of at most
64: a 7-bit grid). Then exact integer arithmetic, as the VNNI kernel's.
"""
from __future__ import annotations

from dataclasses import dataclass

from tvm.script import tirx as T
from tvm.target import Target, codegen

from tvm_patterns.computes.int8_quantization import requantized_codes
from tvm_patterns.sparsity.int8_filter_block import AVX2_LANES, rowpair_avx2_shape

# F x ROWS x GROUPS ymm accumulators beside the two indices, the ones, two row pairs, the gathered
# vector and a product: 16 ymm in all.
MAX_ACCUMULATORS = 8
MAX_PAIR = 128     # |w0| + |w1| of a tap pair: 255 * 128 fits an int16
FEATURES = ("avx2",)


def missing_features(target: Target) -> list[str]:
    return [f for f in FEATURES if not codegen.target_has_features(f, target)]


@dataclass(frozen=True)
class Knobs:
    rows: int = 1     # output rows of a register tile
    groups: int = 1   # groups of 8 output positions of a register tile row
    blocks_inner: bool = True   # parallel loop order: row tiles, then blocks (False: blocks, then row tiles)


def default_knobs(filters: int, out_h: int, out_w: int) -> Knobs:
    """The tile with the fewest padded positions per kernel step, then the most accumulators; blocks
    inner (docs/design.md#int8-filter-block-avx2)."""
    groups_in_row = -(-out_w // AVX2_LANES)
    best = None
    for groups in range(1, groups_in_row + 1):
        for rows in range(1, out_h + 1):
            acc = filters * rows * groups
            if acc > MAX_ACCUMULATORS:
                break
            padded = -(-out_h // rows) * rows * (-(-groups_in_row // groups) * groups)
            cost = padded * (1 + 2 / acc)
            if best is None or cost < best[0]:
                best = (cost, Knobs(rows, groups, blocks_inner=True))
    return best[1] if best else Knobs(blocks_inner=True)


def int8_filter_block_pattern_conv2d_rowpair_avx2(n: int, c: int, h: int, w: int, k: int, blocks: int, filters: int,
                                                  max_len: int, patterns: int, knobs: Knobs, requantize: bool = False):
    """PrimFunc(pair u8 [rowpair_avx2_shape], length [B], channel [B, L], pattern [B, L], value [B, L, F],
    index u8 [P, 64], bias [B*F] int32) -> out int32 [N, K, H, W] = conv(x, w) + bias (the padding at
    the zero point: fold -zero_point * sum(w) into the bias). ``requantize``: as the VNNI kernel's."""
    rows, groups = knobs.rows, knobs.groups
    shape = rowpair_avx2_shape(n, c, h, w, rows, groups)
    tiles_h, tiles_w = (shape[1] - 2) // rows, shape[2] // groups
    tile = filters * rows * groups
    F, L8 = filters, AVX2_LANES
    step_b, step_h = (1, blocks) if knobs.blocks_inner else (tiles_h, 1)

    @T.macro
    def conv(X, length, channel, pattern, value, index, bias, scale, grid, out):
        for q in T.parallel(n * blocks * tiles_h):
            # blocks inner: the threads split the rows, each tile's input rows read by every block from L2
            b: T.int32 = q // step_b % blocks
            th: T.int32 = q // step_h % tiles_h
            nn: T.int32 = q // (blocks * tiles_h)
            for tw in T.serial(tiles_w):
                acc = T.decl_buffer((tile * L8,), "int32", scope="local")
                for a in T.unroll(tile):
                    acc[T.ramp(a * L8, 1, L8)] = T.broadcast(T.int32(0), L8)
                for j in T.serial(length[b]):
                    ch: T.int32 = channel[b, j]
                    first: T.int8x32 = T.reinterpret(index[pattern[b, j], T.ramp(0, 1, 32)], dtype="int8x32")
                    second: T.int8x32 = T.reinterpret(index[pattern[b, j], T.ramp(32, 1, 32)], dtype="int8x32")
                    for r in T.unroll(rows):
                        for g in T.unroll(groups):
                            v: T.int8x32 = T.bitwise_or(
                                T.call_llvm_pure_intrin("int8x32", "llvm.x86.avx2.pshuf.b", T.reinterpret(
                                    X[nn, th * rows + r, tw * groups + g, ch, T.ramp(0, 1, 32)], dtype="int8x32"), first),
                                T.call_llvm_pure_intrin("int8x32", "llvm.x86.avx2.pshuf.b", T.reinterpret(
                                    X[nn, th * rows + r + 2, tw * groups + g, ch, T.ramp(0, 1, 32)], dtype="int8x32"),
                                    second))
                            for f in T.unroll(F):
                                acc[T.ramp(((f * rows + r) * groups + g) * L8, 1, L8)] = (
                                    acc[T.ramp(((f * rows + r) * groups + g) * L8, 1, L8)]
                                    + T.call_llvm_pure_intrin(
                                        "int32x8", "llvm.x86.avx2.pmadd.wd",
                                        T.call_llvm_pure_intrin("int16x16", "llvm.x86.avx2.pmadd.ub.sw", v,
                                                                T.reinterpret(T.broadcast(value[b, j, f], L8),
                                                                              dtype="int8x32")),
                                        T.broadcast(T.int16(1), 16)))
                for f in T.unroll(F):
                    for r in T.unroll(rows):
                        for g in T.unroll(groups):
                            if b * F + f < k and th * rows + r < h:
                                if (tw * groups + g) * L8 + L8 <= w:
                                    sums = (acc[T.ramp(((f * rows + r) * groups + g) * L8, 1, L8)]
                                            + T.broadcast(bias[b * F + f], L8))
                                    out[nn, b * F + f, th * rows + r, T.ramp((tw * groups + g) * L8, 1, L8)] = (
                                        requantized_codes(sums, scale, grid, b * F + f, L8) if requantize else sums)
                                else:
                                    for i in T.serial(T.max(0, w - (tw * groups + g) * L8)):
                                        sums = acc[((f * rows + r) * groups + g) * L8 + i] + bias[b * F + f]
                                        out[nn, b * F + f, th * rows + r, (tw * groups + g) * L8 + i] = (
                                            requantized_codes(sums, scale, grid, b * F + f, 1) if requantize else sums)

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
