"""column_combine_dense_avx512: a column-combined linear layer on x86 with AVX-512, each group's input
picked per output lane by a register permute instead of a gather.

A TIR kernel written out. The weights are packed a tile of V vectors of 16 output features at a time
(``pack_tiles``: values float32 and offsets uint8 [tiles, G, V * 16]), so that a task streams one
contiguous slab. Row m's inputs of group j are one load of the group's g channels (a broadcast of
g <= 16 floats, g a power of two dividing the inputs: no load past a row), and the offsets of a
vector, widened once per group, permute them to the lanes:

    parallel (tile of V * 16 output features, tile of R <= 8 rows)
      j < G
        v < V:  idx[v] = offset[tile, j, v]                             -- 16 bytes, widened
        m < R, v < V (unrolled):
          acc[m, v] += vpermps(broadcast(x[m, j*g : j*g + g]), idx[v]) * values[tile, j, v]
      out[m, tile, v] = acc[m, v]

The output is padded to whole tiles; a stage after the kernel crops it and takes the epilogue.
"""
from __future__ import annotations

import numpy as np
from tvm.script import tirx as T

from .column_combine_conv2d_1x1_nhwc_x86 import LANES, PERMUTE

KERNEL = "column_combine_dense_avx512"
REGISTERS = 32


def takes(group: int, in_features: int) -> bool:
    """Whether the kernel runs groups of ``group`` of ``in_features`` inputs: a power of two that divides
    them, at most the lanes (a broadcast of the group reads nothing past the row)."""
    return group <= LANES and group & (group - 1) == 0 and in_features % group == 0


MAX_ROWS = 8        # rows a register tile


def vectors_per_tile(rows: int) -> int:
    """V: a tile of R = min(rows, MAX_ROWS) rows x V accumulators, V permute indices and two temporaries
    in the registers; at most 4."""
    return max(1, min(4, (REGISTERS - 2) // (min(rows, MAX_ROWS) + 1)))


def pack_tiles(values: np.ndarray, offset: np.ndarray, vectors: int) -> tuple[np.ndarray, np.ndarray]:
    """values float32, offset uint8 [G, out] (``computes.column_combine.pack_column_combined``) ->
    [tiles, G, vectors * 16] each, the output features padded with zero values."""
    G, out = values.shape
    tile = vectors * LANES
    tiles = -(-out // tile)
    pad = ((0, 0), (0, tiles * tile - out))

    def tiled(a):
        return np.ascontiguousarray(np.pad(a, pad).reshape(G, tiles, tile).transpose(1, 0, 2))

    return tiled(values), tiled(offset)


def column_combine_dense_avx512(rows: int, in_features: int, group: int, tiles: int, vectors: int):
    """PrimFunc(x [rows, in], values [tiles, G, V*16], offset uint8 [tiles, G, V*16]) -> out
    [rows, tiles * V * 16] float32 = x @ W.T for the column-combined W the tables hold. Rows go in
    register tiles of up to ``MAX_ROWS``, inner to the feature tiles (a tile's weights stay in cache
    while every row tile passes)."""
    if not takes(group, in_features):
        raise NotImplementedError(f"groups of {group} of {in_features} inputs: the kernel broadcasts a power "
                                  f"of two up to {LANES} that divides the inputs")
    G, V, L = in_features // group, vectors, LANES
    R = min(rows, MAX_ROWS)
    row_tiles = -(-rows // R)
    width = V * L

    @T.prim_func(private=True)
    def kernel(x: T.Buffer((rows, in_features), "float32"), values: T.Buffer((tiles, G, width), "float32"),
               offset: T.Buffer((tiles, G, width), "uint8"), out: T.Buffer((rows, tiles * width), "float32")):
        T.func_attr({"tir.noalias": True})
        for q in T.parallel(tiles * row_tiles):
            t: T.int32 = q // row_tiles
            m0: T.int32 = q % row_tiles * R
            acc = T.decl_buffer((R * V * L,), "float32", scope="local")
            idx = T.decl_buffer((V * L,), "int32", scope="local")
            for a in T.unroll(R * V):
                acc[T.ramp(a * L, 1, L)] = T.broadcast(T.float32(0), L)
            for j in T.serial(G):
                for v in T.unroll(V):
                    idx[T.ramp(v * L, 1, L)] = T.Cast(f"int32x{L}", offset[t, j, T.ramp(v * L, 1, L)])
                for m in T.unroll(R):     # a row past the last reads the last row; it is not written
                    for v in T.unroll(V):
                        acc[T.ramp((m * V + v) * L, 1, L)] = acc[T.ramp((m * V + v) * L, 1, L)] + (
                            T.call_llvm_pure_intrin(
                                f"float32x{L}", PERMUTE,
                                T.Shuffle([x[T.min(m0 + m, rows - 1), T.ramp(j * group, 1, group)]] * (L // group),
                                          [lane % group for lane in range(L)]),
                                idx[T.ramp(v * L, 1, L)])
                            * values[t, j, T.ramp(v * L, 1, L)])
            for m in T.unroll(R):
                if m0 + m < rows:
                    for v in T.unroll(V):
                        out[m0 + m, T.ramp(t * width + v * L, 1, L)] = acc[T.ramp((m * V + v) * L, 1, L)]

    return kernel
