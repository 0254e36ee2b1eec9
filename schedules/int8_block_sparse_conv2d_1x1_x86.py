"""int8_block_sparse_conv2d_1x1_x86: int8 block-punched 1x1 conv for x86 with AVX-512 VNNI, or AVX2.

A TIR kernel written out. The input is the layer's uint8 codes a row of positions per channel, [N, C,
P] (P = Ho * Wo, the stride taken by the quantization). A lane is one output position and its 4 bytes
the codes of 4 kept input channels of the block (a quad of ``sparsity/int8_block``'s tables) at that
position, interleaved from 4 channel rows in registers; a row's 4 weights of the quad are one int32,
broadcast:

    parallel (n, position tiles, block)   -- blocks inner: the input tiles stay in L1 across them
      position tile (several where the layer has few quads; the last one ends at P, overlapping)
      q < quads
        v < V:  xv = x[c0, p:p+L] | x[c1, ...] << 8 | x[c2, ...] << 16 | x[c3, ...] << 24   (4 vpmovzxbd)
                r < R:  acc[r, v] = vpdpbusd(acc[r, v], xv, broadcast(w[b, q, r]))          -- 4L MACs
      out[n, bR + r, tile] = acc[r] + bias        (or, with ``requantize``, the next layer's uint8 codes)

VNNI: L = 16 (zmm), R = 4, 8 or 16, R x V = 16 accumulators (fewer on layers of few positions). AVX2 (``vnni=False``): L = 8 (ymm), a
``vpdpbusd`` becomes ``vpmaddubsw`` + ``vpmaddwd`` by ones + add, exact for weights of at most 64
(``vpmaddubsw`` saturates beyond), as the AVX2 conv's; R = 4 or 8, R x V = 8. One interleave feeds R
multiplies.
"""
from __future__ import annotations

from tvm.script import tirx as T

from tvm_patterns.computes.int8_quantization import requantized_codes

from .int8_block_sparse_dense_x86 import AVX2_BLOCK_ROWS, BLOCK_ROWS

TASK_QUADS = 32             # quads x tiles a parallel task takes at least: a layer of few channels
                            # takes several position tiles a task
VECTOR = {8: T.int32x8, 16: T.int32x16}   # int32 vectors of a ymm, a zmm


def lanes(vnni: bool) -> int:
    """Positions a vector: int32 lanes of a zmm (VNNI) or a ymm (AVX2)."""
    return 16 if vnni else 8


def vectors_per_tile(block_rows: int, vnni: bool, positions: int) -> int:
    """V: position vectors a tile, R x V accumulators (fewer where the layer has fewer positions)."""
    return max(1, min((16 if vnni else 8) // block_rows, positions // lanes(vnni)))


def int8_block_sparse_conv2d_1x1_x86(n: int, channels: int, positions: int, out_features: int, blocks: int,
                                     block_rows: int, quads: int, vnni: bool, requantize: bool = False):
    """PrimFunc(x u8 [N, C, P], col u16 [B, 4Q], value int32 [B, Q, R], bias int32 [B*R]) -> out int32
    [N, F, P] = weight codes @ x codes + bias, P at least ``lanes(vnni)``.
    ``requantize``: two more inputs, scale float32 [B*R, 2] and grid float32 [3], and out uint8: the sums
    requantized onto the next layer's grid in the write-back (``requantized_codes``)."""
    rows = BLOCK_ROWS if vnni else AVX2_BLOCK_ROWS
    if block_rows not in rows:
        raise NotImplementedError(f"the int8 1x1 kernel{'' if vnni else ' on AVX2'} runs blocks of {rows} rows, "
                                  f"not {block_rows}")
    R, V, L = block_rows, vectors_per_tile(block_rows, vnni, positions), lanes(vnni)
    TL = L * V
    if positions < L:
        raise ValueError(f"{positions} positions: the int8 1x1 kernel{'' if vnni else ' on AVX2'} takes at least {L}")
    tiles = -(-positions // TL)
    span = min(tiles, max(1, TASK_QUADS // max(quads, 1)))      # position tiles a task
    tasks = -(-tiles // span)
    i32, u8 = f"int32x{L}", f"uint8x{4 * L}"

    def mac(acc, xv, w):
        if vnni:
            return T.call_llvm_pure_intrin(i32, "llvm.x86.avx512.vpdpbusd.512", acc, T.reinterpret(xv, dtype=u8),
                                           T.reinterpret(T.broadcast(w, L), dtype="int8x64"))
        return acc + T.call_llvm_pure_intrin(
            i32, "llvm.x86.avx2.pmadd.wd",
            T.call_llvm_pure_intrin("int16x16", "llvm.x86.avx2.pmadd.ub.sw", T.reinterpret(xv, dtype="int8x32"),
                                    T.reinterpret(T.broadcast(w, L), dtype="int8x32")),
            T.broadcast(T.int16(1), 16))

    @T.macro
    def body(x, col, value, bias, scale, grid, out):
        for it in T.parallel(n * tasks * blocks):
            for ts in T.serial(span):
                i: T.int32 = it // (tasks * blocks)
                tile: T.int32 = it // blocks % tasks * span + ts
                p0: T.int32 = T.min(tile * TL, positions - TL)     # the last tile ends at P; extra tiles redo it
                b: T.int32 = it % blocks
                acc = T.decl_buffer((R * V * L,), "int32", scope="local")
                for a in T.unroll(R * V):
                    acc[T.ramp(a * L, 1, L)] = T.broadcast(T.int32(0), L)
                for q in T.serial(quads):
                    for v in T.unroll(V):
                        xv: VECTOR[L] = (T.Cast(i32, x[i, T.Cast("int32", col[b, 4 * q]), T.ramp(p0 + v * L, 1, L)])
                              | T.shift_left(T.Cast(i32, x[i, T.Cast("int32", col[b, 4 * q + 1]), T.ramp(p0 + v * L, 1, L)]),
                                             T.broadcast(8, L))
                              | T.shift_left(T.Cast(i32, x[i, T.Cast("int32", col[b, 4 * q + 2]), T.ramp(p0 + v * L, 1, L)]),
                                             T.broadcast(16, L))
                              | T.shift_left(T.Cast(i32, x[i, T.Cast("int32", col[b, 4 * q + 3]), T.ramp(p0 + v * L, 1, L)]),
                                             T.broadcast(24, L)))
                        for r in T.unroll(R):
                            acc[T.ramp((r * V + v) * L, 1, L)] = mac(acc[T.ramp((r * V + v) * L, 1, L)], xv, value[b, q, r])
                for r in T.unroll(R):
                    if b * R + r < out_features:
                        for v in T.unroll(V):
                            sums = acc[T.ramp((r * V + v) * L, 1, L)] + T.broadcast(bias[b * R + r], L)
                            out[i, b * R + r, T.ramp(p0 + v * L, 1, L)] = (
                                requantized_codes(sums, scale, grid, b * R + r, L) if requantize else sums)

    if requantize:
        @T.prim_func(private=True)
        def kernel(x: T.Buffer((n, channels, positions), "uint8"), col: T.Buffer((blocks, 4 * quads), "uint16"),
                   value: T.Buffer((blocks, quads, R), "int32"), bias: T.Buffer((blocks * R,), "int32"),
                   scale: T.Buffer((blocks * R, 2), "float32"), grid: T.Buffer((3,), "float32"),
                   out: T.Buffer((n, out_features, positions), "uint8")):
            T.func_attr({"tir.noalias": True})
            body(x, col, value, bias, scale, grid, out)
    else:
        @T.prim_func(private=True)
        def kernel(x: T.Buffer((n, channels, positions), "uint8"), col: T.Buffer((blocks, 4 * quads), "uint16"),
                   value: T.Buffer((blocks, quads, R), "int32"), bias: T.Buffer((blocks * R,), "int32"),
                   out: T.Buffer((n, out_features, positions), "int32")):
            T.func_attr({"tir.noalias": True})
            body(x, col, value, bias, None, None, out)

    return kernel
