"""int8_filter_block_pattern_conv2d_rowtriple_neon: int8 filter-block pattern conv for aarch64 (``sdot``
with dot product, ``smull`` + ``sadalp`` without).

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

Without dot product (Cortex-A72/A53: Raspberry Pi 4, RK3399), each ``sdot`` is two ``smull`` (s8 x s8 ->
s16 products of 2 positions x 4 taps) and two ``sadalp`` (adjacent s16 pairs added into s32 lanes) into
two accumulators; the write-back adds their lane pairs (``addp``). Exact as well: a product fits s16.
"""
from __future__ import annotations

from dataclasses import dataclass

from tvm.script import tirx as T
from tvm.target import Target, codegen

from tvm_patterns.computes.int8_quantization import requantized_codes
from tvm_patterns.sparsity.int8_filter_block import NEON_LANES, TRIPLE_POSITIONS, rowtriple_shape

# F x ROWS x GROUPS x 2 accumulators beside the indices, the triples, the gathered vectors and the weights
MAX_ACCUMULATORS = 16


def has_sdot(target: Target) -> bool:
    """Whether the aarch64 ``target`` has the dot product instructions (else the smull kernel)."""
    return bool(codegen.target_has_features("dotprod", target))


@dataclass(frozen=True)
class Knobs:
    rows: int = 1     # output rows of a register tile
    groups: int = 1   # groups of 8 output positions (a row triple) of a register tile row
    sdot: int = 1     # 1: sdot; 0: smull + sadalp (a CPU without dot product), two accumulators per sdot's


def default_knobs(filters: int, out_h: int, out_w: int, sdot: bool = True) -> Knobs:
    """The tile with the fewest padded positions per kernel step, then the most accumulators (each
    kernel step loads the pattern's indices and the weights once for the whole tile)."""
    groups_in_row = -(-out_w // TRIPLE_POSITIONS)
    per_vector = 1 if sdot else 2
    best = None
    for groups in range(1, groups_in_row + 1):
        for rows in range(1, out_h + 1):
            acc = filters * rows * groups * 2 * per_vector
            if acc > MAX_ACCUMULATORS:
                break
            padded = -(-out_h // rows) * rows * (-(-groups_in_row // groups) * groups)
            cost = padded * (1 + 2 / acc)
            if best is None or cost < best[0]:
                best = (cost, Knobs(rows, groups, int(sdot)))
    return best[1] if best else Knobs(sdot=int(sdot))


def int8_filter_block_pattern_conv2d_rowtriple_neon(n: int, c: int, h: int, w: int, k: int, blocks: int,
                                                    filters: int, max_len: int, patterns: int, knobs: Knobs,
                                                    requantize: bool = False):
    """PrimFunc(triples int8 [rowtriple_shape], length [B], channel [B, L], pattern [B, L],
    value [B, L, F], index int8 [P, 32], bias [B*F] int32) -> out int32 [N, K, H, W]:
    out = conv(x, w) + bias, where the triples hold the signed codes x (padding at zero point - 128:
    fold -(zero point - 128) * sum(w) into the bias).

    ``requantize``: two more inputs, scale float32 [B*F, 2] and grid float32 [3], and out uint8: the
    sums requantized onto the next layer's grid in the write-back (``requantized_codes``)."""
    rows, groups, sdot = knobs.rows, knobs.groups, bool(knobs.sdot)
    shape = rowtriple_shape(n, c, h, w, rows, groups)
    tiles_h, tiles_w = shape[2] // rows, shape[3] // groups
    halves = 1 if sdot else 2                  # accumulators per 4 output positions
    tile = filters * rows * groups * 2 * halves
    F, V, P = filters, NEON_LANES, TRIPLE_POSITIONS

    def at(a, half=0):
        """Lanes of accumulator ``half`` of the 4 positions numbered ``a``."""
        return T.ramp((a * halves + half) * V, 1, V)

    def vector_sums(acc, a):
        """The 4 positions' sums: the accumulator, or (smull) the lane pairs of its two added."""
        if sdot:
            return acc[at(a)]
        return T.call_llvm_pure_intrin("int32x4", "llvm.aarch64.neon.addp.v4i32", acc[at(a, 0)], acc[at(a, 1)])

    def lane_sum(acc, a, i):
        """Position i (< 4) of the sums of ``a``."""
        if sdot:
            return acc[a * V + i]
        first = (a * 2 + i // 2) * V + i % 2 * 2
        return acc[first] + acc[first + 1]

    def weights(value, b, j, f):
        """Filter f's 4 taps in every lane: a lane of the q-register of 4 filters (sdot's indexed form,
        no broadcast on the vector pipes), or a broadcast load where the block is not 4 filters a vector."""
        if F % V == 0:
            return T.Shuffle([value[b, j, T.ramp(f // V * V, 1, V)]], [f % V] * V)
        return T.broadcast(value[b, j, f], V)

    def pair_sums(v, half, value, b, j, f):
        """(smull) Positions 2 half and 2 half + 1 of v times filter f's taps, as s32 sums of tap pairs."""
        taps = T.reinterpret(T.broadcast(value[b, j, f], 2), dtype="int8x8")    # filter f's 4 taps, twice
        products = T.call_llvm_pure_intrin("int16x8", "llvm.aarch64.neon.smull.v8i16",
                                           T.Shuffle([v], list(range(half * 8, half * 8 + 8))), taps)
        return T.call_llvm_pure_intrin("int32x4", "llvm.aarch64.neon.saddlp.v4i32.v8i16", products)

    @T.macro
    def accumulate(acc, a, v, value, b, j, f):
        """acc(a) += the 4 positions' dot products of v (4 taps each) with filter f's taps."""
        if sdot:
            acc[at(a)] = T.call_llvm_pure_intrin("int32x4", "llvm.aarch64.neon.sdot.v4i32.v16i8", acc[at(a)], v,
                                                 T.reinterpret(weights(value, b, j, f), dtype="int8x16"))
        else:
            acc[at(a, 0)] = acc[at(a, 0)] + pair_sums(v, 0, value, b, j, f)
            acc[at(a, 1)] = acc[at(a, 1)] + pair_sums(v, 1, value, b, j, f)

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
                                    accumulate(acc, ((f * rows + r) * groups + g) * 2 + s, v, value, b, j, f)
                for f in T.unroll(F):
                    for r in T.unroll(rows):
                        for g in T.unroll(groups):
                            for s in T.unroll(2):
                                if b * F + f < k and th * rows + r < h:
                                    if (tw * groups + g) * P + s * V + V <= w:
                                        sums = (vector_sums(acc, ((f * rows + r) * groups + g) * 2 + s)
                                                + T.broadcast(bias[b * F + f], V))
                                        out[nn, b * F + f, th * rows + r,
                                            T.ramp((tw * groups + g) * P + s * V, 1, V)] = (
                                            requantized_codes(sums, scale, grid, b * F + f, V) if requantize
                                            else sums)
                                    else:
                                        for i in T.serial(T.max(0, T.min(V, w - (tw * groups + g) * P - s * V))):
                                            sums = lane_sum(acc, ((f * rows + r) * groups + g) * 2 + s, i) + bias[b * F + f]
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
