"""int8_block_sparse_dense_x86: int8 block-punched linear layer for AVX-512 VNNI, or AVX2.

A TIR kernel written out (the input gather feeds a byte-lane broadcast no TE stage expresses): per row
m of the input and block b of R output features,

    parallel (m, b)
      q < quads (by UNROLL, one accumulator each)
        x4 = x[m, col[b, 4q]] | x[m, col[b, 4q + 1]] << 8 | ...     -- 4 input codes, u8
        acc[u] = vpdpbusd(acc[u], broadcast(x4), w[b, q, 0:R])       -- R rows x 4 MACs
      out[m, bR:bR + R] = sum of acc + bias

R = 4, 8 or 16 (xmm, ymm, zmm). At batch 1 the layer reads its weights once: a byte a weight where
the float kernel reads four. With ``nibbles`` the weights are 4-bit indices into a table of 16 int8
codes, two quads a word, decoded by one ``vpshufb`` each: half the bytes again (``sparsity/int8_block``
describes the tables; docs/design.md#int8-block-linear).

With ``avx2`` (x86 without VNNI) a ``vpdpbusd`` becomes ``vpmaddubsw`` (two u8 x s8 products a
saturating int16: exact for weights of at most 64, which the int8 kind ensures), ``vpmaddwd`` by ones
and an add; R = 4 or 8 (xmm, ymm).
"""
from __future__ import annotations

from tvm.script import tirx as T

from tvm_patterns.sparsity.int8_block import UNROLL

BLOCK_ROWS = (4, 8, 16)
AVX2_BLOCK_ROWS = (4, 8)
PSHUFB = {4: "llvm.x86.ssse3.pshuf.b.128", 8: "llvm.x86.avx2.pshuf.b", 16: "llvm.x86.avx512.pshuf.b.512"}
PMADDUBSW = {4: "llvm.x86.ssse3.pmadd.ub.sw.128", 8: "llvm.x86.avx2.pmadd.ub.sw"}
PMADDWD = {4: "llvm.x86.sse2.pmadd.wd", 8: "llvm.x86.avx2.pmadd.wd"}


def int8_block_sparse_dense_x86(m: int, cols: int, out_features: int, blocks: int, block_rows: int, quads: int,
                                nibbles: bool = False, avx2: bool = False):
    """PrimFunc(x u8 [M, cols], col u16 [B, 4Q], value int32 [B, Q, R] (nibbles: [B, Q/2, R]), levels int8
    [16] (nibbles only), bias int32 [B*R]) -> out int32 [M, out_features] = x codes @ weight codes + bias."""
    rows = AVX2_BLOCK_ROWS if avx2 else BLOCK_ROWS
    if block_rows not in rows:
        raise NotImplementedError(f"the int8 block kernel{' (AVX2)' if avx2 else ''} runs blocks of {rows} rows, "
                                  f"not {block_rows}")
    R = block_rows
    acc_t, byte_t, ubyte_t = f"int32x{R}", f"int8x{4 * R}", f"uint8x{4 * R}"
    intrin = f"llvm.x86.avx512.vpdpbusd.{32 * R}"
    steps = quads // UNROLL
    words = quads // 2 if nibbles else quads
    shuffle = PSHUFB[R]

    def multiply_add(acc, x, w):
        """acc + the 4 products of each lane's u8 x and s8 w bytes."""
        if not avx2:
            return T.call_llvm_pure_intrin(acc_t, intrin, acc, x, w)
        return acc + T.call_llvm_pure_intrin(acc_t, PMADDWD[R], T.call_llvm_pure_intrin(
            f"int16x{2 * R}", PMADDUBSW[R], x, w), T.broadcast(T.int16(1), 2 * R))

    @T.prim_func(private=True)
    def kernel(x: T.Buffer((m, cols), "uint8"), col: T.Buffer((blocks, 4 * quads), "uint16"),
               value: T.Buffer((blocks, words, R), "int32"), levels: T.Buffer((16,), "int8"),
               bias: T.Buffer((blocks * R,), "int32"), out: T.Buffer((m, out_features), "int32")):
        T.func_attr({"tir.noalias": True})
        for mb in T.parallel(m * blocks):
            row: T.int32 = mb // blocks
            b: T.int32 = mb % blocks
            acc = T.decl_buffer((UNROLL * R,), "int32", scope="local")
            table = T.decl_buffer((4 * R,), "int8", scope="local")     # the 16 codes in every 16-byte lane
            if nibbles:
                for i in T.serial(4 * R):
                    table[i] = levels[i % 16]
            for u in T.unroll(UNROLL):
                acc[T.ramp(u * R, 1, R)] = T.broadcast(T.int32(0), R)
            for s in T.serial(steps):
                for u in T.unroll(UNROLL):
                    x4: T.int32 = (T.Cast("int32", x[row, T.Cast("int32", col[b, (s * UNROLL + u) * 4])])
                                   | (T.Cast("int32", x[row, T.Cast("int32", col[b, (s * UNROLL + u) * 4 + 1])]) << 8)
                                   | (T.Cast("int32", x[row, T.Cast("int32", col[b, (s * UNROLL + u) * 4 + 2])]) << 16)
                                   | (T.Cast("int32", x[row, T.Cast("int32", col[b, (s * UNROLL + u) * 4 + 3])]) << 24))
                    if nibbles:   # quad 2k in the low nibbles of word k, 2k + 1 in the high ones
                        acc[T.ramp(u * R, 1, R)] = multiply_add(
                            acc[T.ramp(u * R, 1, R)], T.reinterpret(T.broadcast(x4, R), dtype=ubyte_t),
                            T.call_llvm_pure_intrin(byte_t, shuffle, table[T.ramp(0, 1, 4 * R)], T.reinterpret(
                                T.bitwise_and(T.shift_right(value[b, (s * UNROLL + u) // 2, T.ramp(0, 1, R)],
                                                            T.broadcast(u % 2 * 4, R)),
                                              T.broadcast(0x0F0F0F0F, R)), dtype=byte_t)))
                    else:
                        acc[T.ramp(u * R, 1, R)] = multiply_add(
                            acc[T.ramp(u * R, 1, R)], T.reinterpret(T.broadcast(x4, R), dtype=ubyte_t),
                            T.reinterpret(value[b, s * UNROLL + u, T.ramp(0, 1, R)], dtype=byte_t))
            # the UNROLL = 4 accumulators
            if b * R + R <= out_features:
                out[row, T.ramp(b * R, 1, R)] = (acc[T.ramp(0, 1, R)] + acc[T.ramp(R, 1, R)] + acc[T.ramp(2 * R, 1, R)]
                                                 + acc[T.ramp(3 * R, 1, R)] + bias[T.ramp(b * R, 1, R)])
            else:
                for r in T.serial(out_features - b * R):
                    out[row, b * R + r] = acc[r] + acc[R + r] + acc[2 * R + r] + acc[3 * R + r] + bias[b * R + r]

    return kernel
