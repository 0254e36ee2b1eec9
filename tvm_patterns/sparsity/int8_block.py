"""Int8 block-punched linear layers and 1x1 convs: the tables the x86 kernels
(``schedules/int8_block_sparse_dense_x86``, ``schedules/int8_block_sparse_conv2d_1x1_avx2``) read.

``vpdpbusd`` adds, in each int32 lane, 4 products of u8 and s8 bytes. Here a lane is one row (output
feature) of a block of R rows, and its 4 bytes are that row's weights on 4 consecutive kept columns of
the block (a "quad"): the input side is the 4 input codes of those columns, gathered once and
broadcast to the R lanes. Per block b and quad q:

    col[b, 4q + t]      the block's (4q + t)-th kept column (uint16; padding repeats a kept one)
    value[b, q, r]      row r's 4 int8 weights of quad q, tap t in byte t (an int32)

Blocks keep the same number of columns when pruned at one sparsity; the tables are padded to the
widest, and to a multiple of ``unroll`` quads (the linear kernel's ``UNROLL``), with zero weights.

A weight of at most 16 distinct codes (a grid of 4 bits: uniform, pow2, sp2, ...) packs two codes a
byte (``nibble_tables``): ``levels`` [16] lists the codes, and word k of a row holds the indices of
quad 2k in its low nibbles and of quad 2k + 1 in its high ones, byte t for tap t.
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

    levels: np.ndarray | None = None   # [16] int8: the codes a nibble indexes; None: value holds the codes

    @property
    def quads(self) -> int:
        return self.value.shape[1] * (2 if self.levels is not None else 1)


def int8_block_tables(w2d: np.ndarray, block_rows: int, unroll: int = UNROLL) -> Int8BlockTables:
    """The tables of an int8 [rows, cols] block-punched weight (rows = output features), its quads
    padded to a multiple of ``unroll``."""
    w2d = np.asarray(w2d)
    if w2d.dtype != np.int8 or w2d.ndim != 2:
        raise ValueError(f"int8 block tables need an int8 [rows, cols] weight, got {w2d.dtype} {w2d.shape}")
    if w2d.shape[1] > MAX_COLUMNS:
        raise NotImplementedError(f"{w2d.shape[1]} input features: the int8 kernel indexes at most {MAX_COLUMNS}")
    packed = pack_block_punched(w2d, block_rows)
    B, width = packed.col_idx.shape
    Q = -(-(-(-width // 4)) // unroll) * unroll
    col = np.repeat(packed.col_idx[:, -1:], 4 * Q, axis=1)              # padding: a kept column, weight 0
    col[:, :width] = packed.col_idx
    taps = np.zeros((B, 4 * Q, block_rows), dtype="int8")
    taps[:, :width] = packed.values
    value = np.ascontiguousarray(taps.reshape(B, Q, 4, block_rows).transpose(0, 1, 3, 2)).view("<i4")[..., 0]
    return Int8BlockTables(col.astype("uint16"), value.astype("int32"), tuple(w2d.shape))


def nibble_tables(tables: Int8BlockTables) -> Int8BlockTables | None:
    """The same tables with 4-bit indices into a table of the weight's codes (two quads a word), or None
    when the weight has more than 16 distinct codes."""
    taps = tables.value.view("int8").reshape(*tables.value.shape, 4)                  # [B, Q, R, tap]
    codes = np.unique(np.concatenate([[0], taps.ravel()]))
    if codes.size > 16:
        return None
    levels = np.zeros(16, dtype="int8")
    levels[:codes.size] = codes
    index = np.searchsorted(codes, taps).astype("uint8")
    words = np.ascontiguousarray(index[:, 0::2] | (index[:, 1::2] << 4)).view("<i4")[..., 0]
    return Int8BlockTables(tables.col, words.astype("int32"), tables.shape, levels)
