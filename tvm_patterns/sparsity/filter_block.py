"""Filter-block patterns: pattern + connectivity pruning where the filters of a block share structure.

The filters of a layer are cut into blocks of ``filters`` consecutive ones (the last may be shorter).
Inside a block every filter keeps the same input channels, and each kept kernel has the same pattern
in every filter of the block; the values stay free. One input vector loaded for a kernel's tap then
feeds an FMA of each filter of the block (register-level load reuse across filters, which free
patterns cannot have: two filters rarely share a kernel), at the accuracy cost of the coarser choice.

Projection: per (block, input channel), the library pattern keeping most of the block's energy on
that channel; then the round(B * C / connectivity) (block, channel) kernels with the most kept energy.
Tables: per block, its kernels (flat input offsets of each tap, in channel order) and the values of
every filter of the block for each tap, filters innermost: ``value[b, j, t, f]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .pattern_format import NotPatternSparse, ROW_MULTIPLE, fit_patterns
from .pattern_library import PatternLibrary
from .projection import check_3x3, kernels_to_keep

# The share of extra MACs a block format may spend on taps that are zero in some filters of a block
# (a kernel kept by one filter but zero in another) before the weight is not called filter-block.
MAX_EXTRA_MACS = 0.05


def blocks_of(n_filters: int, filters: int) -> int:
    if not isinstance(filters, (int, np.integer)) or filters < 1:
        raise ValueError(f"filters per block must be a positive integer, got {filters!r}")
    return -(-n_filters // filters)


def _block_energy(w: np.ndarray, filters: int) -> np.ndarray:
    """[B, C, 9] sum of squares over the filters of each block."""
    K, C = w.shape[:2]
    B = blocks_of(K, filters)
    sq = np.zeros((B * filters, C, 9))
    sq[:K] = (w.astype("float64") ** 2).reshape(K, C, 9)
    return sq.reshape(B, filters, C, 9).sum(axis=1)


def project_filter_block_pattern(w: np.ndarray, library: PatternLibrary, connectivity: float = 1.0,
                                 filters: int = 4) -> np.ndarray:
    """The nearest weight (L2) in which each block of ``filters`` filters shares its kept kernels and
    their patterns, one kernel (block, channel) kept in ``connectivity``."""
    w = check_3x3(w, "filter-block pattern projection")
    K, C = w.shape[:2]
    energy = _block_energy(w, filters)                                       # [B, C, 9]
    masks = library.masks.reshape(library.size, 9).astype("float64")
    kept = np.einsum("bcx,px->bcp", energy, masks)                           # [B, C, P]
    pid = np.argmax(kept, axis=2)                                            # [B, C]
    score = np.take_along_axis(kept, pid[..., None], axis=2)[..., 0].ravel()
    keep = np.zeros(score.size, dtype=bool)
    keep[np.argsort(-score, kind="stable")[:kernels_to_keep(score.size, connectivity)]] = True
    mask = library.masks[pid].reshape(-1, C, 9) & keep.reshape(-1, C, 1)     # [B, C, 9]
    mask = np.repeat(mask, filters, axis=0)[:K].reshape(K, C, 3, 3)
    return w * mask.astype(w.dtype)


@dataclass(frozen=True)
class FilterBlockTables:
    """Per block b of ``filters`` filters: ``length[b]`` kernels, each with ``taps`` flat input offsets
    (channel * plane + kh * row + columns[kw]) shared by the block, and the values of each filter of
    the block: ``value[b, j, t, f]`` (filter ``b * filters + f``; past the last filter, zeros). Rows
    past ``length[b]`` hold offset 0 and value 0."""

    length: np.ndarray           # [B] int32
    offset: np.ndarray           # [B, max_len, taps] int32
    value: np.ndarray            # [B, max_len, taps, filters] float32
    n_filters: int               # K, the filters of the layer

    @property
    def filters(self) -> int:
        return self.value.shape[3]

    def mac_density(self, n_channels: int) -> float:
        """MACs the kernel runs (zeros of a shared kernel counted) / dense MACs."""
        return int(self.length.sum()) * self.filters * self.value.shape[2] / (self.n_filters * n_channels * 9)


def block_kernels(w: np.ndarray, library: PatternLibrary, filters: int) -> tuple[np.ndarray, np.ndarray]:
    """(used [B, C] bool: the kernels each block of ``filters`` filters keeps, pattern id [B, C]), or
    NotPatternSparse saying why ``w`` is not filter-block (the union of a block's taps on a channel
    fits no pattern, or shared kernels would spend more than MAX_EXTRA_MACS on zeros)."""
    nonzero, _ = fit_patterns(w, library)                                   # every kernel fits alone
    K, C = nonzero.shape
    B = blocks_of(K, filters)
    nz = np.zeros((B * filters, C, 9), dtype=bool)
    nz[:K] = (w != 0).reshape(K, C, 9)
    union = nz.reshape(B, filters, C, 9).any(axis=1)                        # [B, C, 9]
    used = union.any(axis=2)
    fits = ~(union[:, :, None, :] & ~library.masks.reshape(1, 1, library.size, 9)).any(axis=3)   # [B, C, P]
    bad = used & ~fits.any(axis=2)
    if bad.any():
        b, c = map(int, np.argwhere(bad)[0])
        raise NotPatternSparse(f"blocks of {filters} filters do not share patterns: block {b} channel {c} "
                               f"uses taps {np.flatnonzero(union[b, c]).tolist()} across its filters")
    real = np.minimum(filters, K - filters * np.arange(B))                   # filters of each block
    extra = (used.sum(axis=1) * real).sum() / max(1, nonzero.sum()) - 1 if nonzero.any() else 0.0
    if extra > MAX_EXTRA_MACS:
        raise NotPatternSparse(f"blocks of {filters} filters do not share kernels: {extra:.0%} more MACs "
                               f"than the filters' own kernels")
    return used, np.argmax(fits, axis=2)


def filter_block_tables(w: np.ndarray, library: PatternLibrary, filters: int, plane: int, row: int,
                        columns=(0, 1, 2)) -> FilterBlockTables:
    """The tables of a pattern-sparse weight whose blocks of ``filters`` filters share their kernels
    and patterns, or NotPatternSparse saying why it is not one (``block_kernels``)."""
    used, pid = block_kernels(w, library, filters)
    K, C = w.shape[:2]
    B = used.shape[0]
    taps = library.tap_offsets()                                            # [P, T, 2]
    tap_off = taps[:, :, 0] * row + np.asarray(columns)[taps[:, :, 1]]     # [P, T]
    T = library.taps
    counts = used.sum(axis=1)
    max_len = -(-max(1, int(counts.max(initial=0))) // ROW_MULTIPLE) * ROW_MULTIPLE
    offset = np.zeros((B, max_len, T), dtype="int64")
    value = np.zeros((B, max_len, T, filters), dtype="float32")
    wp = np.zeros((B * filters, C, 3, 3), dtype="float32")
    wp[:K] = w
    wp = wp.reshape(B, filters, C, 3, 3)
    for b in range(B):
        cs = np.flatnonzero(used[b])                                        # channel order: memory order
        p = pid[b, cs]
        offset[b, :len(cs)] = cs[:, None] * plane + tap_off[p]
        # value[b, j, t, f] = w[b*F + f, cs[j], kh, kw] of tap t of pattern p[j]
        value[b, :len(cs)] = wp[b][:, cs[:, None], taps[p, :, 0], taps[p, :, 1]].transpose(1, 2, 0)
    if offset.max(initial=0) >= 2 ** 31:
        raise ValueError("input too large for int32 offsets")
    return FilterBlockTables(counts.astype("int32"), offset.astype("int32"), value, K)
