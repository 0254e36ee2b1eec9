"""Int8 filter-block pattern conv: the tables of an int8 weight and the input layouts the kernels read:
row pairs for x86 VNNI (``schedules/int8_filter_block_pattern_conv2d_rowpair_x86``, described here),
AVX2 row pairs and aarch64 row triples (below).

``vpdpbusd`` adds, in each of 16 int32 lanes, the 4 products of 4 u8 and 4 s8 bytes. Here the 4
bytes of a lane are the 4 taps of one pattern kernel (issue 34's layout): the weight side is a
kernel's 4 taps of one filter (one int32, broadcast to the lanes), the input side 16 output positions
times their 4 tap inputs, gathered from the input rows by one byte permutation (``vpermi2b``) whose
index depends only on the pattern. The filters of a block share their kernels and patterns, so one
gathered vector feeds a ``vpdpbusd`` of every filter of the block. The input is stored in row pairs
so that two 64-byte loads hold every tap of 16 positions:

    rowpair[n, c, r, g, s * 32 + i] = xpad[n, c, r + s, 16 * g + i]       s < 2, i < 32

``xpad`` is the input with a border of one row and column at the zero point. Output row h,
positions 16g .. 16g + 15, reads ``rowpair[n, c, h, g]`` (xpad rows h and h + 1) and
``rowpair[n, c, h + 2, g]`` (row h + 2). Padding 1; stride 1, or stride 2 from records (below).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .filter_block import block_kernels
from .int8_block import window_out_hw
from .pattern_library import PatternLibrary

LANES = 16    # int32 lanes of a 512-bit vector: output positions per gathered vector
HALF = 32     # input columns per row of a row pair


@dataclass(frozen=True)
class Int8FilterBlockTables:
    """Per block b of ``filters`` filters: ``length[b]`` kernels, each on input channel
    ``channel[b, j]`` with pattern ``pattern[b, j]``, and each filter's 4 int8 taps of it packed in one
    int32 (tap t in byte t, the pattern's row-major tap order): ``value[b, j, f]``. Rows past
    ``length[b]`` and filters past the last hold zeros."""

    length: np.ndarray           # [B] int32
    channel: np.ndarray          # [B, L] int32
    pattern: np.ndarray          # [B, L] int32
    value: np.ndarray            # [B, L, F] int32
    n_filters: int               # K

    @property
    def filters(self) -> int:
        return self.value.shape[2]


def int8_filter_block_tables(w: np.ndarray, library: PatternLibrary, filters: int) -> Int8FilterBlockTables:
    """The tables of an int8 [K, C, 3, 3] filter-block pattern weight (``filter_block.block_kernels``
    says why a weight is not one)."""
    w = np.asarray(w)
    if w.dtype != np.int8:
        raise ValueError(f"int8 filter-block tables need an int8 weight, got {w.dtype}")
    if library.taps != 4:
        raise NotImplementedError(f"the int8 kernel packs 4 taps a lane (one vpdpbusd group); this library "
                                  f"keeps {library.taps}")
    used, pid = block_kernels(w, library, filters)
    K, C = w.shape[:2]
    B = used.shape[0]
    counts = used.sum(axis=1)
    L = max(1, int(counts.max(initial=0)))
    channel = np.zeros((B, L), dtype="int32")
    pattern = np.zeros((B, L), dtype="int32")
    taps = np.zeros((B, L, filters, 4), dtype="int8")
    wp = np.zeros((B * filters, C, 3, 3), dtype="int8")
    wp[:K] = w
    wp = wp.reshape(B, filters, C, 3, 3)
    offsets = library.tap_offsets()                                        # [P, 4, 2]
    for b in range(B):
        cs = np.flatnonzero(used[b])
        p = pid[b, cs]
        channel[b, :len(cs)], pattern[b, :len(cs)] = cs, p
        # taps[b, j, f, t] = w[b*F + f, cs[j], kh, kw] of tap t of pattern p[j]
        taps[b, :len(cs)] = wp[b][:, cs[:, None], offsets[p, :, 0], offsets[p, :, 1]].transpose(1, 0, 2)
    value = np.ascontiguousarray(taps).view("<i4")[..., 0].astype("int32")
    return Int8FilterBlockTables(counts.astype("int32"), channel, pattern, value, K)


def permute_index(library: PatternLibrary) -> np.ndarray:
    """[P, 64] uint8: the ``vpermi2b`` index of each pattern. Byte 4i + t of the gathered vector is
    tap t of output position i: xpad row h + kh, column 16g + i + kw, found in the first table
    (rowpair h: rows h, h + 1) at kh * 32 + i + kw or in the second (rowpair h + 2) at 64 + i + kw."""
    offsets = library.tap_offsets()                                        # [P, 4, 2]
    kh, kw = offsets[:, None, :, 0], offsets[:, None, :, 1]               # [P, 1, 4]
    i = np.arange(LANES)[None, :, None]
    index = np.where(kh < 2, kh * HALF, 2 * HALF) + i + kw                 # [P, 16, 4]
    return index.reshape(library.size, 4 * LANES).astype("uint8")


def rowpair_shape(n: int, c: int, h: int, w: int, rows: int = 1, groups: int = 1) -> tuple:
    """Shape of the row-pair input for an output of h x w computed in tiles of ``rows`` rows and
    ``groups`` groups of 16 positions (the tiles may run past the output; their rows are padding)."""
    tiles_h = -(-h // rows)
    tiles_w = -(-(-(-w // LANES)) // groups)
    return (n, c, tiles_h * rows + 2, tiles_w * groups, 2 * HALF)


def pack_rowpairs(x: np.ndarray, zero_point: int = 0, rows: int = 1, groups: int = 1) -> np.ndarray:
    """uint8 input [N, C, H, W] -> its row pairs (``rowpair_shape``), padding at ``zero_point``."""
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim != 4:
        raise ValueError(f"row pairs pack a uint8 [N, C, H, W] input, got {x.dtype} {x.shape}")
    n, c, h, w = x.shape
    shape = rowpair_shape(n, c, h, w, rows, groups)
    hp, g = shape[2], shape[3]
    xpad = np.full((n, c, hp + 1, g * LANES + HALF), zero_point, dtype="uint8")
    xpad[:, :, 1:h + 1, 1:w + 1] = x
    out = np.empty(shape, dtype="uint8")
    for s in range(2):
        for gi in range(g):
            out[:, :, :, gi, s * HALF:(s + 1) * HALF] = xpad[:, :, s:s + hp, gi * LANES:gi * LANES + HALF]
    return out


# Stride 2 (VNNI): output row h, positions 16g .. 16g + 15 read xpad rows 2h .. 2h + 2 at columns
# 32g .. 32g + 32, kept as one 128-byte record (the two vpermi2b tables) of three rows of 33 columns:
#
#     record[n, c, h, g, 33 kh + j] = xpad[n, c, 2h + kh, 32g + j]      kh < 3, j < 33 (bytes 99.. at the zero point)
STRIDE2_COLUMNS = 2 * LANES + 1
RECORD = 4 * HALF


def records_shape(n: int, c: int, h: int, w: int, rows: int = 1, groups: int = 1) -> tuple:
    """Shape of the stride-2 records of an h x w input, whose output is computed in tiles of ``rows``
    rows and ``groups`` groups of 16 positions (the tiles may run past the output; their rows are padding)."""
    ho, wo = window_out_hw(h, w, (3, 3), (2, 2), (1, 1, 1, 1))
    tiles_h = -(-ho // rows)
    tiles_w = -(-(-(-wo // LANES)) // groups)
    return (n, c, tiles_h * rows, tiles_w * groups, RECORD)


def pack_records(x: np.ndarray, zero_point: int = 0, rows: int = 1, groups: int = 1) -> np.ndarray:
    """uint8 input [N, C, H, W] -> its stride-2 records (``records_shape``), padding at ``zero_point``."""
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim != 4:
        raise ValueError(f"stride-2 records pack a uint8 [N, C, H, W] input, got {x.dtype} {x.shape}")
    n, c, h, w = x.shape
    shape = records_shape(n, c, h, w, rows, groups)
    hp, g = shape[2], shape[3]
    xpad = np.full((n, c, 2 * hp + 1, 2 * LANES * g + 1), zero_point, dtype="uint8")
    xpad[:, :, 1:h + 1, 1:w + 1] = x
    out = np.full(shape, zero_point, dtype="uint8")
    for kh in range(3):
        for gi in range(g):
            out[:, :, :, gi, kh * STRIDE2_COLUMNS:(kh + 1) * STRIDE2_COLUMNS] = \
                xpad[:, :, kh:kh + 2 * hp:2, 2 * LANES * gi:2 * LANES * gi + STRIDE2_COLUMNS]
    return out


def record_index(library: PatternLibrary) -> np.ndarray:
    """[P, 64] uint8: the ``vpermi2b`` index of each pattern into a stride-2 record: byte 4i + t of the
    gathered vector is tap t (kh, kw) of output position i, record byte 33 kh + 2i + kw."""
    offsets = library.tap_offsets()                                        # [P, 4, 2]
    kh, kw = offsets[:, None, :, 0], offsets[:, None, :, 1]               # [P, 1, 4]
    i = np.arange(LANES)[None, :, None]
    return (kh * STRIDE2_COLUMNS + 2 * i + kw).reshape(library.size, 4 * LANES).astype("uint8")


# aarch64 (sdot, tbl): 4 output positions a vector; 8 positions (two vectors) a 32-byte table of 3 rows
# x 10 columns, gathered by a 2-register tbl (one µop where a 3-register one takes two)
NEON_LANES = 4
TRIPLE_POSITIONS = 8
TRIPLE_COLUMNS = TRIPLE_POSITIONS + 2
TRIPLE_BYTES = 32


def rowtriple_shape(n: int, c: int, h: int, w: int, rows: int = 1, groups: int = 1) -> tuple:
    """Shape of the row triples the NEON kernel reads for an output of h x w in tiles of ``rows`` rows
    and ``groups`` groups of 8 positions (the tiles may run past the output; their rows are padding)."""
    tiles_h = -(-h // rows)
    tiles_w = -(-(-(-w // TRIPLE_POSITIONS)) // groups)
    return (n, c, tiles_h * rows, tiles_w * groups, TRIPLE_BYTES)


def pack_rowtriples(x: np.ndarray, zero_point: int = 0, rows: int = 1, groups: int = 1) -> np.ndarray:
    """uint8 codes [N, C, H, W] -> int8 row triples (``rowtriple_shape``) of signed codes (code - 128):

        triple[n, c, r, g, 10 * kh + i] = xpad[n, c, r + kh, 8 * g + i] - 128       kh < 3, i < 10

    ``xpad``: x with a border of one row and column at the zero point (so is every byte past)."""
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim != 4:
        raise ValueError(f"row triples pack a uint8 [N, C, H, W] input, got {x.dtype} {x.shape}")
    n, c, h, w = x.shape
    shape = rowtriple_shape(n, c, h, w, rows, groups)
    hp, g = shape[2], shape[3]
    xpad = np.full((n, c, hp + 2, g * TRIPLE_POSITIONS + 2), zero_point, dtype=np.int16)
    xpad[:, :, 1:h + 1, 1:w + 1] = x
    out = np.full(shape, zero_point - 128, dtype="int8")
    for kh in range(3):
        for gi in range(g):
            cols = xpad[:, :, kh:kh + hp, gi * TRIPLE_POSITIONS:gi * TRIPLE_POSITIONS + TRIPLE_COLUMNS]
            out[:, :, :, gi, kh * TRIPLE_COLUMNS:(kh + 1) * TRIPLE_COLUMNS] = (cols - 128).astype("int8")
    return out


def rowtriple_index(library: PatternLibrary) -> np.ndarray:
    """[P, 32] int8: the two ``tbl`` indices of each pattern (positions 0-3, then 4-7 of a triple).
    Byte 4i + t of half s is tap t of output position 4s + i: byte 10 kh + 4s + i + kw of the triple."""
    offsets = library.tap_offsets()                                        # [P, 4, 2]
    kh, kw = offsets[:, None, None, :, 0], offsets[:, None, None, :, 1]   # [P, 1, 1, 4]
    s = np.arange(2)[None, :, None, None]
    i = np.arange(NEON_LANES)[None, None, :, None]
    return (kh * TRIPLE_COLUMNS + NEON_LANES * s + i + kw).reshape(library.size, 32).astype("int8")


# x86 with AVX2 only (vpshufb, vpmaddubsw): 8 output positions a ymm, 4 a 128-bit lane, which vpshufb
# cannot leave; a lane's 4 positions read 6 columns of rows h .. h + 2, kept as two rows x 6 columns
# in each 16-byte half of a 32-byte row pair. The channels are innermost: the kernels of a block, in
# channel order, read forward through one row's pairs (docs/design.md#int8-filter-block-avx2)
AVX2_LANES = 8
AVX2_HALF = 16
AVX2_POSITIONS = 4          # output positions a 128-bit lane
AVX2_COLUMNS = AVX2_POSITIONS + 2
SHUFFLE_ZERO = 0x80         # a vpshufb index byte that writes 0


def rowpair_avx2_shape(n: int, c: int, h: int, w: int, rows: int = 1, groups: int = 1) -> tuple:
    """Shape of the AVX2 row pairs for an output of h x w in tiles of ``rows`` rows and ``groups``
    groups of 8 positions (the tiles may run past the output; their rows are padding)."""
    tiles_h = -(-h // rows)
    tiles_w = -(-(-(-w // AVX2_LANES)) // groups)
    return (n, tiles_h * rows + 2, tiles_w * groups, c, 2 * AVX2_HALF)


def pack_rowpairs_avx2(x: np.ndarray, zero_point: int = 0, rows: int = 1, groups: int = 1) -> np.ndarray:
    """uint8 codes [N, C, H, W] -> the AVX2 row pairs (``rowpair_avx2_shape``):

        pair[n, r, g, c, 16 s + 6 k + i] = xpad[n, c, r + k, 8 g + 4 s + i]       s < 2, k < 2, i < 6

    ``xpad``: x with a border of one row and column at the zero point (so are bytes 12..15 of a half)."""
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim != 4:
        raise ValueError(f"AVX2 row pairs pack a uint8 [N, C, H, W] input, got {x.dtype} {x.shape}")
    n, c, h, w = x.shape
    shape = rowpair_avx2_shape(n, c, h, w, rows, groups)
    hp, g = shape[1], shape[2]
    xpad = np.full((n, c, hp + 1, g * AVX2_LANES + 2), zero_point, dtype="uint8")
    xpad[:, :, 1:h + 1, 1:w + 1] = x
    out = np.full(shape, zero_point, dtype="uint8")
    for s in range(2):
        for k in range(2):
            for gi in range(g):
                col = gi * AVX2_LANES + AVX2_POSITIONS * s
                out[:, :, gi, :, s * AVX2_HALF + k * AVX2_COLUMNS:s * AVX2_HALF + (k + 1) * AVX2_COLUMNS] = \
                    xpad[:, :, k:k + hp, col:col + AVX2_COLUMNS].transpose(0, 2, 1, 3)
    return out


def shuffle_index_avx2(library: PatternLibrary) -> np.ndarray:
    """[P, 64] uint8: the two ``vpshufb`` indices of each pattern, into row pair h (rows h, h + 1) then
    into row pair h + 2 (row h + 2 at its row 0). Byte 4i + t of each 16-byte half is tap t of the
    half's output position i, at 6 kh + i + kw in the first or 6 (kh - 2) + i + kw in the second; the
    other index writes 0 there, and the two shuffles are or-ed."""
    offsets = library.tap_offsets()                                        # [P, 4, 2]
    kh, kw = offsets[:, None, :, 0], offsets[:, None, :, 1]               # [P, 1, 4]
    i = np.arange(AVX2_POSITIONS)[None, :, None]
    first = np.where(kh < 2, kh * AVX2_COLUMNS + i + kw, SHUFFLE_ZERO)     # [P, 4, 4]
    second = np.where(kh < 2, SHUFFLE_ZERO, (kh - 2) * AVX2_COLUMNS + i + kw)
    half = lambda a: np.tile(a.reshape(library.size, AVX2_HALF), 2)       # the same in both lanes
    return np.concatenate([half(first), half(second)], axis=1).astype("uint8")
