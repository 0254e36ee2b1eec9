"""Int8 block-punched linear layers: the tables the x86 VNNI kernel (``schedules/int8_block_sparse_dense_x86``)
reads.

``vpdpbusd`` adds, in each int32 lane, 4 products of u8 and s8 bytes. Here a lane is one row (output
feature) of a block of R rows, and its 4 bytes are that row's weights on 4 consecutive kept columns of
the block (a "quad"): the input side is the 4 input codes of those columns, gathered once and
broadcast to the R lanes. Per block b and quad q:

    col[b, 4q + t]      the block's (4q + t)-th kept column (uint16; padding repeats a kept one)
    value[b, q, r]      row r's 4 int8 weights of quad q, tap t in byte t (an int32)

Blocks keep the same number of columns when pruned at one sparsity; the tables are padded to the
widest, and to a multiple of ``UNROLL`` quads, with zero weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .block import pack_block_punched

UNROLL = 4                    # quads a kernel step: independent accumulators
MAX_COLUMNS = 1 << 16         # uint16 column indices


@dataclass(frozen=True)
class Int8BlockTables:
    col: np.ndarray           # [B, 4 * Q] uint16
    value: np.ndarray         # [B, Q, R] int32 (4 int8 weights each)
    shape: tuple              # (rows, cols) of the weight

    @property
    def block_rows(self) -> int:
        return self.value.shape[2]

    @property
    def quads(self) -> int:
        return self.value.shape[1]


def int8_block_tables(w2d: np.ndarray, block_rows: int) -> Int8BlockTables:
    """The tables of an int8 [rows, cols] block-punched weight (rows = output features)."""
    w2d = np.asarray(w2d)
    if w2d.dtype != np.int8 or w2d.ndim != 2:
        raise ValueError(f"int8 block tables need an int8 [rows, cols] weight, got {w2d.dtype} {w2d.shape}")
    if w2d.shape[1] > MAX_COLUMNS:
        raise NotImplementedError(f"{w2d.shape[1]} input features: the int8 kernel indexes at most {MAX_COLUMNS}")
    packed = pack_block_punched(w2d, block_rows)
    B, width = packed.col_idx.shape
    Q = -(-(-(-width // 4)) // UNROLL) * UNROLL
    col = np.repeat(packed.col_idx[:, -1:], 4 * Q, axis=1)              # padding: a kept column, weight 0
    col[:, :width] = packed.col_idx
    taps = np.zeros((B, 4 * Q, block_rows), dtype="int8")
    taps[:, :width] = packed.values
    value = np.ascontiguousarray(taps.reshape(B, Q, 4, block_rows).transpose(0, 1, 3, 2)).view("<i4")[..., 0]
    return Int8BlockTables(col.astype("uint16"), value.astype("int32"), tuple(w2d.shape))
