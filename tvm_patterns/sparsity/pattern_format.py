"""FKW-style packed storage of a pattern-sparse 3x3 conv weight, and its kernel tables.

Packed (PatDNN's filter-kernel-weight idea):
- filters reordered (filter-kernel reorder): by kernel count, then by pattern mix, so filters with
  similar work sit together; ``perm[i]`` is the original index of packed filter ``i``;
- per packed filter, its surviving kernels sorted by pattern id, then input channel:
  ``kernel_ptr`` [K+1] (CSR), ``channel`` [nnz], ``pattern`` [nnz];
- ``values`` [nnz, taps], the kept taps in the pattern's row-major tap order.
``to_dense`` inverts ``pack`` exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .pattern_library import PatternLibrary


@dataclass(frozen=True, eq=False)
class PackedPatternConv:
    shape: tuple                 # (K, C, 3, 3) of the dense weight
    library: PatternLibrary
    perm: np.ndarray             # [K] int32, original filter of each packed filter
    kernel_ptr: np.ndarray       # [K+1] int32
    channel: np.ndarray          # [nnz] int32
    pattern: np.ndarray          # [nnz] int32
    values: np.ndarray           # [nnz, taps] float32

    @property
    def nnz_kernels(self) -> int:
        return int(self.kernel_ptr[-1])

    def kernel_counts(self) -> np.ndarray:
        """[K] kernels kept per filter, in the original filter order."""
        counts = np.empty(self.shape[0], dtype="int64")
        counts[self.perm] = np.diff(self.kernel_ptr)
        return counts

    def mac_density(self) -> float:
        """Nonzero MACs / dense MACs."""
        return self.nnz_kernels * self.library.taps / float(np.prod(self.shape))

    def to_dense(self) -> np.ndarray:
        dense = np.zeros(self.shape, dtype=self.values.dtype)
        taps = self.library.tap_offsets()[self.pattern]             # [nnz, taps, 2]
        filt = np.repeat(self.perm, np.diff(self.kernel_ptr))
        dense[filt[:, None], self.channel[:, None], taps[..., 0], taps[..., 1]] = self.values
        return dense


class NotPatternSparse(ValueError):
    """The weight does not fit the pattern library."""


def fit_patterns(w: np.ndarray, library: PatternLibrary) -> tuple[np.ndarray, np.ndarray]:
    """(nonzero [K, C] bool, pattern id [K, C]) or NotPatternSparse naming the first bad kernel.

    A kernel fits a pattern when all its nonzero taps lie inside it; the first such pattern wins.
    """
    w = np.asarray(w)
    if w.ndim != 4 or w.shape[2:] != (3, 3):
        raise NotPatternSparse(f"weight shape {w.shape} is not [K, C, 3, 3]")
    if not np.isfinite(w).all():
        raise NotPatternSparse("weight has NaN or infinite values")
    nz = (w != 0).reshape(*w.shape[:2], 9)
    outside = nz[:, :, None, :] & ~library.masks.reshape(1, 1, library.size, 9)
    fits = ~outside.any(axis=3)                                  # [K, C, P]
    nonzero = nz.any(axis=2)
    bad = nonzero & ~fits.any(axis=2)
    if bad.any():
        k, c = map(int, np.argwhere(bad)[0])
        taps = np.flatnonzero(nz[k, c]).tolist()
        raise NotPatternSparse(
            f"{int(bad.sum())} kernel(s) fit no library pattern, e.g. filter {k} channel {c} "
            f"with nonzero taps {taps} ({library})")
    return nonzero, np.argmax(fits, axis=2)


def pack(w: np.ndarray, library: PatternLibrary) -> PackedPatternConv:
    """Dense pattern-sparse [K, C, 3, 3] weight -> PackedPatternConv (NotPatternSparse if it isn't)."""
    nonzero, pid = fit_patterns(w, library)
    K, C = nonzero.shape
    counts = nonzero.sum(axis=1)
    mix = np.stack([(nonzero & (pid == p)).sum(axis=1) for p in range(library.size)], axis=1)
    # Filter-kernel reorder: most kernels first, then by pattern mix (lexicographic), stable.
    perm = np.lexsort(tuple(-mix[:, p] for p in reversed(range(library.size))) + (-counts,)).astype("int32")
    taps = library.tap_offsets()                                # [P, taps, 2]
    ptr, chans, pats, vals = [0], [], [], []
    for k in perm:
        cs = np.flatnonzero(nonzero[k])
        cs = cs[np.lexsort((cs, pid[k, cs]))]
        p = pid[k, cs]
        chans.append(cs)
        pats.append(p)
        vals.append(w[k, cs[:, None], taps[p, :, 0], taps[p, :, 1]])
        ptr.append(ptr[-1] + len(cs))
    cat = lambda xs, shape: np.concatenate(xs) if xs else np.zeros(shape)  # noqa: E731
    return PackedPatternConv(
        shape=tuple(w.shape), library=library, perm=perm,
        kernel_ptr=np.asarray(ptr, dtype="int32"),
        channel=cat(chans, (0,)).astype("int32"),
        pattern=cat(pats, (0,)).astype("int32"),
        values=cat(vals, (0, library.taps)).astype(w.dtype if w.dtype == np.float32 else "float32"),
    )


# The offset tables' rows (the kernels of a filter) are padded to a multiple of this, so that the
# channels_blocked order has chunk counts to choose from whatever the longest list (VGG-16's
# conv5_1 has 179 rows, a prime: only 1 or 179 chunks).
ROW_MULTIPLE = 4


@dataclass(frozen=True)
class KernelTables:
    """Per original filter k: ``length[k]`` kernels, each with ``taps`` flat input offsets and values.

    offset[k, j, t] = channel * plane + kh * row + columns[kw] (index into one padded image);
    rows are padded to ``max_len`` with value 0 / offset 0, so a kernel may run all of them.
    """

    length: np.ndarray           # [K] int32
    offset: np.ndarray           # [K, max_len, taps] int32
    value: np.ndarray            # [K, max_len, taps] float32

    @property
    def max_len(self) -> int:
        return self.offset.shape[1]


def kernel_tables(packed: PackedPatternConv, plane: int, row: int, columns=(0, 1, 2)) -> KernelTables:
    """Flat-offset tables for a padded input of ``plane`` elements per channel, ``row`` per row, tap
    column kw at ``columns[kw]`` inside a row.

    Filters come back in their original order, so the kernel needs no output permutation.
    """
    K = packed.shape[0]
    counts = np.diff(packed.kernel_ptr)
    max_len = -(-max(1, int(counts.max(initial=0))) // ROW_MULTIPLE) * ROW_MULTIPLE
    taps = packed.library.tap_offsets()                         # [P, T, 2]
    tap_off = taps[:, :, 0] * row + np.asarray(columns)[taps[:, :, 1]]   # [P, T]
    T = packed.library.taps
    offset = np.zeros((K, max_len, T), dtype="int64")
    value = np.zeros((K, max_len, T), dtype="float32")
    length = np.zeros(K, dtype="int32")
    for i, k in enumerate(packed.perm):
        a, b = packed.kernel_ptr[i], packed.kernel_ptr[i + 1]
        order = a + np.argsort(packed.channel[a:b], kind="stable")   # walk the input in memory order
        length[k] = b - a
        offset[k, : b - a] = packed.channel[order, None] * plane + tap_off[packed.pattern[order]]
        value[k, : b - a] = packed.values[order]
    if offset.max(initial=0) >= 2 ** 31:
        raise ValueError("input too large for int32 offsets")
    return KernelTables(length, offset.astype("int32"), value)


@dataclass(frozen=True)
class PatternTables:
    """Per original filter k and pattern p: ``length[k, p]`` kernels of that pattern, each with the
    flat offset of its input channel (``channel * plane``) and its ``taps`` values, in channel order.

    rows are padded to ``max_len`` (the most kernels of one pattern in a filter) with zeros.
    """

    length: np.ndarray           # [K, P] int32
    channel: np.ndarray          # [K, P, max_len] int32
    value: np.ndarray            # [K, P, max_len, taps] float32

    @property
    def max_len(self) -> int:
        return self.channel.shape[2]


def pattern_tables(packed: PackedPatternConv, plane: int) -> PatternTables:
    """Per-pattern tables for a padded input of ``plane`` elements per channel (filters in their
    original order). The taps' offsets inside a plane are the library's, known at compile time."""
    K, P = packed.shape[0], packed.library.size
    length = np.zeros((K, P), dtype="int32")
    filt = np.repeat(packed.perm, np.diff(packed.kernel_ptr))
    np.add.at(length, (filt, packed.pattern), 1)
    max_len = max(1, int(length.max(initial=0)))
    channel = np.zeros((K, P, max_len), dtype="int64")
    value = np.zeros((K, P, max_len, packed.library.taps), dtype="float32")
    for i, k in enumerate(packed.perm):
        a, b = packed.kernel_ptr[i], packed.kernel_ptr[i + 1]
        for p in range(P):                                     # pack sorts by pattern, then channel
            sel = a + np.flatnonzero(packed.pattern[a:b] == p)
            channel[k, p, : len(sel)] = packed.channel[sel] * plane
            value[k, p, : len(sel)] = packed.values[sel]
    if channel.max(initial=0) + plane >= 2 ** 31:
        raise ValueError("input too large for int32 offsets")
    return PatternTables(length, channel.astype("int32"), value)


def tap_offsets(library: PatternLibrary, row: int, columns=(0, 1, 2)) -> tuple:
    """[P][taps] flat offsets kh * row + columns[kw] of each pattern's taps in a padded plane of pitch
    ``row`` (tap column kw at ``columns[kw]`` inside a row)."""
    taps = library.tap_offsets()
    return tuple(tuple(int(x) for x in r) for r in taps[:, :, 0] * row + np.asarray(columns)[taps[:, :, 1]])
