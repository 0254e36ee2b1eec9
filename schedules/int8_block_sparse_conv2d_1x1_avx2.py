"""int8_block_sparse_conv2d_1x1_avx2: int8 block-punched 1x1 conv for x86 with AVX2.

A TIR kernel written out. The input is the layer's uint8 codes a row of positions per channel, [N, C,
P] (P = Ho * Wo, the stride taken by the quantization, padded to whole tiles). A ymm lane is one
output position and its 4 bytes the codes of 4 kept input channels of the block (a quad of
``sparsity/int8_block``'s tables) at that position, interleaved from 4 channel rows in registers; a
row's 4 weights of the quad are one int32, broadcast:

    parallel (n, position tiles, block)   -- blocks inner: the input tiles stay in L1 across them
      position tile (several where the layer has few quads)
      q < quads
        v < V:  xv = x[c0, p:p+8] | x[c1, ...] << 8 | x[c2, ...] << 16 | x[c3, ...] << 24   (4 vpmovzxbd)
                r < R:  acc[r, v] += vpmaddwd(vpmaddubsw(xv, broadcast(w[b, q, r])), 1)     -- 32 MACs
      out[n, bR + r, tile] = acc[r] + bias

R x V = 8 accumulators of 16 ymm (R = 8, 4 -> V = 1, 2); one interleave feeds R multiplies. Exact
for weights of at most 64 (``vpmaddubsw`` saturates beyond), as the AVX2 conv's.
"""
from __future__ import annotations

from tvm.script import tirx as T

from .int8_block_sparse_dense_x86 import AVX2_BLOCK_ROWS

LANES = 8                   # int32 lanes of a ymm: positions a vector
ACCUMULATORS = 8
TASK_QUADS = 32             # quads x tiles a parallel task takes at least: a layer of few channels
                            # takes several position tiles a task


def vectors_per_tile(block_rows: int) -> int:
    """V: position vectors a tile, R x V accumulators."""
    return max(1, ACCUMULATORS // block_rows)


def tile_positions(block_rows: int) -> int:
    return LANES * vectors_per_tile(block_rows)


def int8_block_sparse_conv2d_1x1_avx2(n: int, channels: int, positions: int, out_features: int, blocks: int,
                                      block_rows: int, quads: int):
    """PrimFunc(x u8 [N, C, P], col u16 [B, 4Q], value int32 [B, Q, R], bias int32 [B*R]) -> out int32
    [N, F, P] = weight codes @ x codes + bias, P a multiple of ``tile_positions(R)``."""
    if block_rows not in AVX2_BLOCK_ROWS:
        raise NotImplementedError(f"the int8 1x1 kernel runs blocks of {AVX2_BLOCK_ROWS} rows, not {block_rows}")
    R, V = block_rows, vectors_per_tile(block_rows)
    if positions % (LANES * V):
        raise ValueError(f"{positions} positions: the int8 1x1 kernel takes a multiple of {LANES * V}")
    tiles = positions // (LANES * V)
    span = min(tiles, max(1, TASK_QUADS // max(quads, 1)))      # position tiles a task
    tasks = -(-tiles // span)

    @T.prim_func(private=True)
    def kernel(x: T.Buffer((n, channels, positions), "uint8"), col: T.Buffer((blocks, 4 * quads), "uint16"),
               value: T.Buffer((blocks, quads, R), "int32"), bias: T.Buffer((blocks * R,), "int32"),
               out: T.Buffer((n, out_features, positions), "int32")):
        T.func_attr({"tir.noalias": True})
        for it in T.parallel(n * tasks * blocks):
            for ts in T.serial(span):
                i: T.int32 = it // (tasks * blocks)
                tile: T.int32 = it // blocks % tasks * span + ts
                p0: T.int32 = T.min(tile, tiles - 1) * (LANES * V)     # the last task's extra tiles redo the last
                b: T.int32 = it % blocks
                acc = T.decl_buffer((R * V * LANES,), "int32", scope="local")
                for a in T.unroll(R * V):
                    acc[T.ramp(a * LANES, 1, LANES)] = T.broadcast(T.int32(0), LANES)
                for q in T.serial(quads):
                    for v in T.unroll(V):
                        xv: T.int32x8 = (
                            T.Cast("int32x8", x[i, T.Cast("int32", col[b, 4 * q]), T.ramp(p0 + v * LANES, 1, LANES)])
                            | T.shift_left(T.Cast("int32x8", x[i, T.Cast("int32", col[b, 4 * q + 1]),
                                                               T.ramp(p0 + v * LANES, 1, LANES)]), T.broadcast(8, LANES))
                            | T.shift_left(T.Cast("int32x8", x[i, T.Cast("int32", col[b, 4 * q + 2]),
                                                               T.ramp(p0 + v * LANES, 1, LANES)]), T.broadcast(16, LANES))
                            | T.shift_left(T.Cast("int32x8", x[i, T.Cast("int32", col[b, 4 * q + 3]),
                                                               T.ramp(p0 + v * LANES, 1, LANES)]), T.broadcast(24, LANES)))
                        for r in T.unroll(R):
                            acc[T.ramp((r * V + v) * LANES, 1, LANES)] = acc[T.ramp((r * V + v) * LANES, 1, LANES)] + (
                                T.call_llvm_pure_intrin(
                                    "int32x8", "llvm.x86.avx2.pmadd.wd",
                                    T.call_llvm_pure_intrin("int16x16", "llvm.x86.avx2.pmadd.ub.sw",
                                                            T.reinterpret(xv, dtype="int8x32"),
                                                            T.reinterpret(T.broadcast(value[b, q, r], LANES), dtype="int8x32")),
                                    T.broadcast(T.int16(1), 16)))
                for r in T.unroll(R):
                    if b * R + r < out_features:
                        for v in T.unroll(V):
                            out[i, b * R + r, T.ramp(p0 + v * LANES, 1, LANES)] = (
                                acc[T.ramp((r * V + v) * LANES, 1, LANES)] + T.broadcast(bias[b * R + r], LANES))

    return kernel
