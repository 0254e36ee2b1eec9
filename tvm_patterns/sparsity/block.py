"""Block-sparse weight matrices as plain numpy: the block-punched and BSR formats, and projection.

A weight matrix ``w2d`` is [rows, cols]: a linear layer's ``W`` [out, in], a 1x1 conv's weight
[K, C, 1, 1] viewed as [K, C].

Block-punched (block column-row pruning, GRIM/YOLObile): rows are cut into blocks of
``block_rows`` consecutive rows (the last block may be shorter); inside a block the same columns
are kept for every row, so one gathered input column feeds ``block_rows`` outputs (SIMD-friendly).

``BlockPunched`` stores, per block ``b``:
- ``nnz_cols[b]``: how many columns the block keeps;
- ``col_idx[b, :nnz_cols[b]]``: the kept columns, ascending;
- ``values[b, j, r]``: ``w2d[b * block_rows + r, col_idx[b, j]]``.
Both tables are padded to ``width = max(nnz_cols)`` (at least 1) with zero values (index of the
last kept column, so padding reads memory that is already hot), and ``values`` is padded to full
``block_rows`` in the last block. The padding contributes exact zeros, so computes can run the
padded tables with static extents.

``BSR`` is classic block compressed sparse rows with ``r x c`` blocks (edges padded with zeros).

``to_dense`` inverts ``pack`` exactly for both formats.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _check_block(block_rows, what="block_rows") -> int:
    if isinstance(block_rows, bool) or not isinstance(block_rows, (int, np.integer)) or block_rows < 1:
        raise ValueError(f"{what} must be a positive integer, got {block_rows!r}")
    return int(block_rows)


def _check_sparsity(sparsity) -> float:
    try:
        s = float(sparsity)
    except (TypeError, ValueError):
        raise ValueError(f"sparsity must be a number in [0, 1], got {sparsity!r}") from None
    if not (0.0 <= s <= 1.0):   # also rejects NaN
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity!r}")
    return s


def _check_2d(w2d) -> np.ndarray:
    w = np.asarray(w2d)
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D weight [rows, cols], got shape {w.shape}")
    return w


def project_block_punched(w2d: np.ndarray, block_rows: int, sparsity: float) -> np.ndarray:
    """Euclidean projection onto block-punched sparsity.

    w2d: [rows, cols]. Rows are cut into blocks of ``block_rows`` (last one may be shorter); in each
    block the ``round((1 - sparsity) * cols)`` columns with the largest L2 norm over the block's
    rows are kept, at least one (ties: lower column index first), the others are set to zero.
    Returns a new array of the same shape and dtype.
    """
    w = _check_2d(w2d)
    br = _check_block(block_rows)
    s = _check_sparsity(sparsity)
    if s == 1.0:
        raise ValueError("sparsity 1.0 would remove the whole layer: use a value below 1 (at least one "
                         "column per block is kept)")
    rows, cols = w.shape
    keep = max(1, int(round((1.0 - s) * cols)))   # never a whole layer removed (as connectivity keeps a kernel)
    out = np.zeros_like(w)
    if rows == 0 or cols == 0:
        return out
    for r0 in range(0, rows, br):
        blk = w[r0:r0 + br]
        norms = np.sqrt(np.sum(np.square(blk.astype(np.float64)), axis=0))
        kept = np.sort(np.argsort(-norms, kind="stable")[:keep])
        out[r0:r0 + br, kept] = blk[:, kept]
    return out


def block_column_mask(w2d: np.ndarray, block_rows: int) -> np.ndarray:
    """[n_blocks, cols] bool: the columns each block of rows must keep (any nonzero in it)."""
    w = _check_2d(w2d)
    br = _check_block(block_rows)
    rows, cols = w.shape
    nb = max(1, -(-rows // br))
    pad = np.zeros((nb * br, cols), dtype=bool)
    pad[:rows] = w != 0
    return pad.reshape(nb, br, cols).any(axis=1)


def block_density(w2d: np.ndarray, block_rows: int) -> float:
    """MACs of the block-punched format (kept columns x rows of their block) / dense MACs."""
    w = _check_2d(w2d)
    br = _check_block(block_rows)
    rows, cols = w.shape
    if rows * cols == 0:
        return 0.0
    mask = block_column_mask(w, br)
    sizes = np.minimum(br, rows - np.arange(mask.shape[0]) * br)
    return float((mask.sum(axis=1) * sizes).sum()) / (rows * cols)


@dataclass(frozen=True, eq=False)
class BlockPunched:
    shape: tuple                 # (rows, cols) of the dense matrix
    block_rows: int
    nnz_cols: np.ndarray         # [n_blocks] int32
    col_idx: np.ndarray          # [n_blocks, width] int32, padded
    values: np.ndarray           # [n_blocks, width, block_rows], padded with zeros

    @property
    def n_blocks(self) -> int:
        return int(self.col_idx.shape[0])

    @property
    def width(self) -> int:
        return int(self.col_idx.shape[1])

    def row_sizes(self) -> np.ndarray:
        """[n_blocks] rows in each block (the last may be shorter)."""
        rows = self.shape[0]
        return np.minimum(self.block_rows, rows - np.arange(self.n_blocks) * self.block_rows)

    def macs_per_column(self) -> int:
        """Nonzero MACs per output position (one row of x): sum over blocks of kept cols x rows."""
        return int((self.nnz_cols.astype(np.int64) * self.row_sizes()).sum())

    def mac_density(self) -> float:
        rows, cols = self.shape
        return self.macs_per_column() / float(rows * cols) if rows * cols else 0.0

    def padded_macs_per_column(self) -> int:
        """MACs the padded tables execute per output position (n_blocks x width x block_rows)."""
        return self.n_blocks * self.width * self.block_rows

    def to_dense(self) -> np.ndarray:
        rows, cols = self.shape
        br = self.block_rows
        dense = np.zeros((self.n_blocks * br, cols), dtype=self.values.dtype)
        for b in range(self.n_blocks):
            n = int(self.nnz_cols[b])
            dense[b * br:(b + 1) * br, self.col_idx[b, :n]] = self.values[b, :n, :].T
        return dense[:rows]


def pack_block_punched(w2d: np.ndarray, block_rows: int) -> BlockPunched:
    """Pack any [rows, cols] matrix; a block keeps every column with a nonzero in its rows."""
    w = _check_2d(w2d)
    br = _check_block(block_rows)
    rows, cols = w.shape
    if rows == 0 or cols == 0:
        raise ValueError(f"cannot pack an empty matrix of shape {w.shape}")
    mask = block_column_mask(w, br)
    nb = mask.shape[0]
    nnz = mask.sum(axis=1).astype(np.int32)
    width = max(1, int(nnz.max()))
    col_idx = np.zeros((nb, width), dtype=np.int32)
    values = np.zeros((nb, width, br), dtype=w.dtype)
    wpad = np.zeros((nb * br, cols), dtype=w.dtype)
    wpad[:rows] = w
    for b in range(nb):
        kept = np.flatnonzero(mask[b]).astype(np.int32)
        n = kept.size
        col_idx[b, :n] = kept
        col_idx[b, n:] = kept[-1] if n else 0
        values[b, :n, :] = wpad[b * br:(b + 1) * br, kept].T
    return BlockPunched((rows, cols), br, nnz, col_idx, values)


@dataclass(frozen=True, eq=False)
class BSR:
    shape: tuple                 # (rows, cols) of the dense matrix
    block: tuple                 # (r, c)
    indptr: np.ndarray           # [ceil(rows / r) + 1] int32
    indices: np.ndarray          # [nnz_blocks] int32, block-column of each block
    data: np.ndarray             # [nnz_blocks, r, c]

    @property
    def nnz_blocks(self) -> int:
        return int(self.indptr[-1])

    def mac_density(self) -> float:
        rows, cols = self.shape
        r, c = self.block
        return self.nnz_blocks * r * c / float(rows * cols) if rows * cols else 0.0

    def to_dense(self) -> np.ndarray:
        rows, cols = self.shape
        r, c = self.block
        nbr, nbc = -(-rows // r), -(-cols // c)
        dense = np.zeros((nbr, r, nbc, c), dtype=self.data.dtype)
        brow = np.repeat(np.arange(nbr), np.diff(self.indptr))
        dense[brow, :, self.indices, :] = self.data
        return dense.reshape(nbr * r, nbc * c)[:rows, :cols]


def pack_bsr(w2d: np.ndarray, block: tuple) -> BSR:
    """Pack any [rows, cols] matrix into BSR with ``block = (r, c)``; all-zero blocks are dropped."""
    w = _check_2d(w2d)
    if len(tuple(block)) != 2:
        raise ValueError(f"block must be (r, c), got {block!r}")
    r = _check_block(block[0], "block rows")
    c = _check_block(block[1], "block cols")
    rows, cols = w.shape
    nbr, nbc = -(-rows // r), -(-cols // c)
    pad = np.zeros((nbr * r, nbc * c), dtype=w.dtype)
    pad[:rows, :cols] = w
    tiles = pad.reshape(nbr, r, nbc, c).transpose(0, 2, 1, 3)         # [nbr, nbc, r, c]
    nz = (tiles != 0).any(axis=(2, 3))
    br, bc = np.nonzero(nz)
    indptr = np.zeros(nbr + 1, dtype=np.int32)
    np.cumsum(nz.sum(axis=1), out=indptr[1:])
    return BSR((rows, cols), (r, c), indptr, bc.astype(np.int32), tiles[br, bc].copy())


def project_bsr(w2d: np.ndarray, block: tuple, sparsity: float) -> np.ndarray:
    """Keep the ``round((1 - sparsity) * n_blocks)`` r x c blocks of largest Frobenius norm."""
    w = _check_2d(w2d)
    r = _check_block(block[0], "block rows")
    c = _check_block(block[1], "block cols")
    s = _check_sparsity(sparsity)
    rows, cols = w.shape
    nbr, nbc = -(-rows // r), -(-cols // c)
    pad = np.zeros((nbr * r, nbc * c), dtype=w.dtype)
    pad[:rows, :cols] = w
    tiles = pad.reshape(nbr, r, nbc, c)
    norms = np.sqrt(np.square(tiles.astype(np.float64)).sum(axis=(1, 3))).ravel()
    keep = int(round((1.0 - s) * norms.size))
    mask = np.zeros(norms.size, dtype=bool)
    mask[np.argsort(-norms, kind="stable")[:keep]] = True
    tiles = tiles * mask.reshape(nbr, 1, nbc, 1)
    return tiles.reshape(nbr * r, nbc * c)[:rows, :cols].astype(w.dtype, copy=False)


def conv1x1_as_matrix(w: np.ndarray) -> np.ndarray:
    """[K, C, 1, 1] conv weight -> [K, C] matrix view."""
    w = np.asarray(w)
    if w.ndim != 4 or w.shape[2:] != (1, 1):
        raise ValueError(f"expected a [K, C, 1, 1] weight, got shape {w.shape}")
    return w.reshape(w.shape[0], w.shape[1])


__all__ = [
    "BSR", "BlockPunched", "block_column_mask", "block_density", "conv1x1_as_matrix",
    "pack_block_punched", "pack_bsr", "project_block_punched", "project_bsr",
]
