"""int8_filter_block_pattern_conv2d_rowtriple_neon: int8 filter-block pattern conv for aarch64 with dot product.

The x86 VNNI kernel's plan (``int8_filter_block_pattern_conv2d_rowpair_x86``) in 128-bit vectors:
``sdot`` adds 4 s8 x s8 products a 32-bit lane, the 4 bytes of a lane the 4 taps of one pattern kernel.
The taps of 8 output positions sit in 3 input rows x 10 columns, stored together as one 32-byte row
triple (``sparsity.int8_filter_block.pack_rowtriples``); two ``tbl`` over its two q-registers gather
positions 0-3 and 4-7, their indices depending only on the pattern. Each gathered vector feeds an
``sdot`` for each filter of the block, in its indexed form over the q-register of 4 filters' taps:

    parallel (n, block)
      row tile, group tile
        j < length[block]             -- the block's kernels: channel c, pattern p
          ROWS x GROUPS (unrolled)
            t0, t1 = triple[c, row, group]                          -- 32 bytes
            v_s = tbl2(t0, t1, index[p, s])    s < 2                -- 4 positions x 4 taps
            F (unrolled): acc[f, s] = sdot(acc[f, s], v_s, value[block, j, 0:4].4b[f])
        write-back: acc + bias (int32), the tail of a row lane by lane

Codes are signed (u8 code - 128: sdot multiplies s8 by s8), the shift folded into the bias as the
zero point is. Exact integer arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass

from tvm.script import tirx as T
from tvm.target import Target, codegen

from tvm_patterns.computes.int8_quantization import requantized_codes
from tvm_patterns.sparsity.int8_filter_block import NEON_LANES, TRIPLE_POSITIONS, rowtriple_shape

# F x ROWS x GROUPS x 2 accumulators beside the indices, the triples, the gathered vectors and the weights
MAX_ACCUMULATORS = 16


def missing_features(target: Target) -> list[str]:
    """The instruction sets the kernel needs that an aarch64 ``target`` lacks."""
    return [] if codegen.target_has_features("dotprod", target) else ["dotprod"]


@dataclass(frozen=True)
class Knobs:
    rows: int = 1     # output rows of a register tile
    groups: int = 1   # groups of 8 output positions (a row triple) of a register tile row


def default_knobs(filters: int, out_h: int, out_w: int) -> Knobs:
    """The tile with the fewest padded positions per kernel step, then the most accumulators (each
    kernel step loads the pattern's indices and the weights once for the whole tile)."""
    groups_in_row = -(-out_w // TRIPLE_POSITIONS)
    best = None
    for groups in range(1, groups_in_row + 1):
        for rows in range(1, out_h + 1):
            acc = filters * rows * groups * 2
            if acc > MAX_ACCUMULATORS:
                break
            padded = -(-out_h // rows) * rows * (-(-groups_in_row // groups) * groups)
            cost = padded * (1 + 2 / acc)
            if best is None or cost < best[0]:
                best = (cost, Knobs(rows, groups))
    return best[1] if best else Knobs()


def int8_filter_block_pattern_conv2d_rowtriple_neon(n: int, c: int, h: int, w: int, k: int, blocks: int,
                                                    filters: int, max_len: int, patterns: int, knobs: Knobs,
                                                    requantize: bool = False):
    """PrimFunc(triples int8 [rowtriple_shape], length [B], channel [B, L], pattern [B, L],
    value [B, L, F], index int8 [P, 32], bias [B*F] int32) -> out int32 [N, K, H, W]:
    out = conv(x, w) + bias, where the triples hold the signed codes x (padding at zero point - 128:
    fold -(zero point - 128) * sum(w) into the bias).

    ``requantize``: two more inputs, scale float32 [B*F, 2] and grid float32 [3], and out uint8: the
    sums requantized onto the next layer's grid in the write-back (``requantized_codes``)."""
    rows, groups = knobs.rows, knobs.groups
    shape = rowtriple_shape(n, c, h, w, rows, groups)
    tiles_h, tiles_w = shape[2] // rows, shape[3] // groups
    tile = filters * rows * groups * 2
    F, V, P = filters, NEON_LANES, TRIPLE_POSITIONS

    def weights(value, b, j, f):
        """Filter f's 4 taps in every lane: a lane of the q-register of 4 filters (sdot's indexed form,
        no broadcast on the vector pipes), or a broadcast load where the block is not 4 filters a vector."""
        if F % V == 0:
            return T.Shuffle([value[b, j, T.ramp(f // V * V, 1, V)]], [f % V] * V)
        return T.broadcast(value[b, j, f], V)

    @T.macro
    def conv(X, length, channel, pattern, value, index, bias, scale, grid, out):
        for q in T.parallel(n * tiles_h * blocks):
            b: T.int32 = q % blocks
            th: T.int32 = q // blocks % tiles_h
            nn: T.int32 = q // (blocks * tiles_h)
            for tw in T.serial(tiles_w):
                acc = T.decl_buffer((tile * V,), "int32", scope="local")
                for a in T.unroll(tile):
                    acc[T.ramp(a * V, 1, V)] = T.broadcast(T.int32(0), V)
                for j in T.serial(length[b]):
                    ch: T.int32 = channel[b, j]
                    for r in T.unroll(rows):
                        for g in T.unroll(groups):
                            for s in T.unroll(2):
                                v: T.int8x16 = T.call_llvm_pure_intrin(
                                    "int8x16", "llvm.aarch64.neon.tbl2.v16i8",
                                    X[nn, ch, th * rows + r, tw * groups + g, T.ramp(0, 1, 16)],
                                    X[nn, ch, th * rows + r, tw * groups + g, T.ramp(16, 1, 16)],
                                    index[pattern[b, j], T.ramp(s * 16, 1, 16)])
                                for f in T.unroll(F):
                                    acc[T.ramp((((f * rows + r) * groups + g) * 2 + s) * V, 1, V)] = (
                                        T.call_llvm_pure_intrin(
                                            "int32x4", "llvm.aarch64.neon.sdot.v4i32.v16i8",
                                            acc[T.ramp((((f * rows + r) * groups + g) * 2 + s) * V, 1, V)], v,
                                            T.reinterpret(weights(value, b, j, f), dtype="int8x16")))
                for f in T.unroll(F):
                    for r in T.unroll(rows):
                        for g in T.unroll(groups):
                            for s in T.unroll(2):
                                if b * F + f < k and th * rows + r < h:
                                    if (tw * groups + g) * P + s * V + V <= w:
                                        sums = (acc[T.ramp((((f * rows + r) * groups + g) * 2 + s) * V, 1, V)]
                                                + T.broadcast(bias[b * F + f], V))
                                        out[nn, b * F + f, th * rows + r,
                                            T.ramp((tw * groups + g) * P + s * V, 1, V)] = (
                                            requantized_codes(sums, scale, grid, b * F + f, V) if requantize
                                            else sums)
                                    else:
                                        for i in T.serial(T.max(0, T.min(V, w - (tw * groups + g) * P - s * V))):
                                            sums = acc[(((f * rows + r) * groups + g) * 2 + s) * V + i] + bias[b * F + f]
                                            out[nn, b * F + f, th * rows + r, (tw * groups + g) * P + s * V + i] = (
                                                requantized_codes(sums, scale, grid, b * F + f, 1) if requantize
                                                else sums)

    if requantize:
        @T.prim_func(private=True)
        def kernel(X: T.Buffer(shape, "int8"), length: T.Buffer((blocks,), "int32"),
                   channel: T.Buffer((blocks, max_len), "int32"), pattern: T.Buffer((blocks, max_len), "int32"),
                   value: T.Buffer((blocks, max_len, filters), "int32"), index: T.Buffer((patterns, 32), "int8"),
                   bias: T.Buffer((blocks * filters,), "int32"), scale: T.Buffer((blocks * filters, 2), "float32"),
                   grid: T.Buffer((3,), "float32"), out: T.Buffer((n, k, h, w), "uint8")):
            T.func_attr({"tir.noalias": True})
            conv(X, length, channel, pattern, value, index, bias, scale, grid, out)
    else:
        @T.prim_func(private=True)
        def kernel(X: T.Buffer(shape, "int8"), length: T.Buffer((blocks,), "int32"),
                   channel: T.Buffer((blocks, max_len), "int32"), pattern: T.Buffer((blocks, max_len), "int32"),
                   value: T.Buffer((blocks, max_len, filters), "int32"), index: T.Buffer((patterns, 32), "int8"),
                   bias: T.Buffer((blocks * filters,), "int32"), out: T.Buffer((n, k, h, w), "int32")):
            T.func_attr({"tir.noalias": True})
            conv(X, length, channel, pattern, value, index, bias, None, None, out)

    return kernel
