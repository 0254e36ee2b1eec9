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


def window_out_hw(h: int, w: int, window: tuple, strides: tuple, padding: tuple) -> tuple[int, int]:
    """Output rows and columns of a sliding window (a conv's kernel, a pool's window) of ``window`` (KH, KW),
    ``strides``, ``padding`` (top, left, bottom, right) over an h x w input (floor mode)."""
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = window, strides, padding
    return (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1


def patches_shape(n: int, c: int, h: int, w: int, kernel: tuple, strides: tuple, padding: tuple) -> tuple:
    """[N, Q, Ho, Wo * 4]: the patches of a dense conv of ``kernel`` (KH, KW), ``strides``, ``padding`` (top,
    left, bottom, right) over an [N, C, H, W] input, C*KH*KW codes a position in Q quads."""
    ho, wo = window_out_hw(h, w, kernel, strides, padding)
    return (n, -(-(c * kernel[0] * kernel[1]) // 4), ho, wo * 4)


def pack_patches(x: np.ndarray, zero_point: int, kernel: tuple, strides: tuple, padding: tuple) -> np.ndarray:
    """uint8 codes [N, C, H, W] -> the patches the int8 1x1 kernel reads for a dense conv (``patches_shape``):

        patches[n, q, y, 4x + t] = xpad[n, c, y*sh + kh, x*sw + kw]    for tap 4q + t = (c, kh, kw) in row-major order

    ``xpad``: x padded at the zero point, as are the taps past C*KH*KW."""
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim != 4:
        raise ValueError(f"patches pack a uint8 [N, C, H, W] input, got {x.dtype} {x.shape}")
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = kernel, strides, padding
    n, c, h, w = x.shape
    shape = patches_shape(n, c, h, w, kernel, strides, padding)
    ho, wo = shape[2], shape[3] // 4
    xpad = np.full((n, c, h + pt + pb, w + pl + pr), zero_point, dtype="uint8")
    xpad[:, :, pt:pt + h, pl:pl + w] = x
    taps = np.full((n, shape[1] * 4, ho, wo), zero_point, dtype="uint8")
    for i in range(kh):
        for j in range(kw):
            taps[:, i * kw + j:c * kh * kw:kh * kw] = xpad[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
    return np.ascontiguousarray(taps.reshape(n, shape[1], 4, ho, wo).transpose(0, 1, 3, 4, 2)).reshape(shape)


def dense_quad_tables(codes2d: np.ndarray, block_rows: int) -> Int8BlockTables:
    """The tables of a dense int8 [rows, cols] weight, every column kept in every block (the layout of
    ``pack_patches``: quad q is columns 4q .. 4q + 3, zeros past the last)."""
    codes2d = np.asarray(codes2d)
    if codes2d.dtype != np.int8 or codes2d.ndim != 2:
        raise ValueError(f"dense int8 tables need an int8 [rows, cols] weight, got {codes2d.dtype} {codes2d.shape}")
    rows, cols = codes2d.shape
    if cols > MAX_COLUMNS:
        raise NotImplementedError(f"{cols} input features: the int8 kernel indexes at most {MAX_COLUMNS}")
    B, Q = -(-rows // block_rows), -(-cols // 4)
    taps = np.zeros((B * block_rows, Q * 4), dtype="int8")
    taps[:rows, :cols] = codes2d
    value = np.ascontiguousarray(taps.reshape(B, block_rows, Q, 4).transpose(0, 2, 1, 3)).view("<i4")[..., 0]
    col = np.tile(np.minimum(np.arange(Q * 4), cols - 1), (B, 1))
    return Int8BlockTables(col.astype("uint16"), value.astype("int32"), (rows, cols))
