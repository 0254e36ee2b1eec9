"""Pattern libraries: the K allowed shapes of a pruned 3x3 kernel.

A pattern is a boolean 3x3 mask with exactly ``taps`` True entries. PatDNN's library keeps the
centre plus three neighbours: four "T" shapes and four 2x2 squares that contain the centre.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

# Taps as flat indices kh * 3 + kw.
_PATDNN_TAPS = (
    (1, 3, 4, 5), (1, 4, 5, 7), (3, 4, 5, 7), (1, 3, 4, 7),
    (0, 1, 3, 4), (1, 2, 4, 5), (3, 4, 6, 7), (4, 5, 7, 8),
)


@dataclass(frozen=True, eq=False)
class PatternLibrary:
    """masks: [P, 3, 3] bool, every mask with the same number of taps, no duplicates."""

    masks: np.ndarray

    def __post_init__(self):
        masks = np.asarray(self.masks)
        if masks.ndim != 3 or masks.shape[1:] != (3, 3):
            raise ValueError(f"pattern library: masks must have shape [P, 3, 3], got {masks.shape}")
        if masks.shape[0] == 0:
            raise ValueError("pattern library: needs at least one pattern")
        if not np.isin(masks, (0, 1)).all():
            raise ValueError("pattern library: masks must be boolean (0/1)")
        masks = masks.astype(bool)
        counts = masks.reshape(len(masks), 9).sum(axis=1)
        if (counts != counts[0]).any() or counts[0] == 0:
            raise ValueError(f"pattern library: every pattern must keep the same nonzero number of taps, got {counts.tolist()}")
        if len({m.tobytes() for m in masks}) != len(masks):
            raise ValueError("pattern library: duplicate patterns")
        masks.setflags(write=False)
        object.__setattr__(self, "masks", masks)

    @property
    def size(self) -> int:
        return len(self.masks)

    @property
    def taps(self) -> int:
        return int(self.masks[0].sum())

    def tap_offsets(self) -> np.ndarray:
        """[P, taps, 2] int32: (kh, kw) of each kept tap, row-major order."""
        return np.stack([np.argwhere(m) for m in self.masks]).astype("int32")

    def __eq__(self, other):
        return isinstance(other, PatternLibrary) and np.array_equal(self.masks, other.masks)

    def __hash__(self):
        return hash(self.masks.tobytes())

    def __repr__(self):
        return f"PatternLibrary({self.size} patterns x {self.taps} taps)"

    @staticmethod
    def from_taps(taps) -> "PatternLibrary":
        """Build from flat tap lists (kh * 3 + kw), e.g. ``[(1, 3, 4, 5), ...]``."""
        masks = np.zeros((len(taps), 9), dtype=bool)
        for i, t in enumerate(taps):
            if any(not 0 <= int(x) < 9 for x in t):
                raise ValueError(f"pattern library: tap index outside a 3x3 kernel in {tuple(t)}")
            masks[i, list(t)] = True
        return PatternLibrary(masks.reshape(-1, 3, 3))

    @staticmethod
    def patdnn() -> "PatternLibrary":
        """PatDNN's default library: 8 patterns x 4 taps."""
        return PatternLibrary.from_taps(_PATDNN_TAPS)

    @staticmethod
    def extract(weights, n_patterns: int = 8, taps: int = 4) -> "PatternLibrary":
        """The ``n_patterns`` most frequent top-``taps`` magnitude masks of the given 3x3 weights.

        weights: one [K, C, 3, 3] array or a list of them (all-zero kernels are ignored).
        """
        if not 1 <= taps <= 9:
            raise ValueError(f"pattern library: taps must be in 1..9, got {taps}")
        if isinstance(weights, np.ndarray) or not isinstance(weights, (list, tuple)):
            weights = [weights]
        counter: Counter = Counter()
        for w in weights:
            w = np.asarray(w, dtype="float64")
            if w.ndim != 4 or w.shape[2:] != (3, 3):
                raise ValueError(f"pattern library: expected [K, C, 3, 3] weights, got {w.shape}")
            k = np.abs(w.reshape(-1, 9))
            k = k[k.max(axis=1) > 0]
            top = np.argsort(-k, axis=1, kind="stable")[:, :taps]
            masks = np.zeros_like(k, dtype=bool)
            np.put_along_axis(masks, top, True, axis=1)
            counter.update(m.tobytes() for m in masks)
        if not counter:
            raise ValueError("pattern library: no nonzero 3x3 kernel to extract patterns from")
        best = [np.frombuffer(b, dtype=bool).reshape(3, 3) for b, _ in counter.most_common(n_patterns)]
        return PatternLibrary(np.stack(best))

    @staticmethod
    def of_weight(w, max_patterns: int = 32) -> "PatternLibrary | None":
        """The library a pruned [K, C, 3, 3] weight already uses: the distinct masks of its fullest
        kernels (the most nonzero taps), when there are at most ``max_patterns`` of them and every
        kernel lies inside one (a kept tap may have become exactly 0); else None. How the build
        recognises a model pruned with a library of its own (``oneshot_prune``'s extracted one)."""
        w = np.asarray(w)
        if w.ndim != 4 or w.shape[2:] != (3, 3):
            return None
        nz = (w != 0).reshape(-1, 9)
        nz = nz[nz.any(axis=1)]
        counts = nz.sum(axis=1)
        if len(nz) == 0 or counts.max() == 9:
            return None
        full = np.unique(nz[counts == counts.max()], axis=0)
        if len(full) > max_patterns:
            return None
        inside = ~(nz[:, None, :] & ~full[None, :, :]).any(axis=2)
        if not inside.any(axis=1).all():
            return None
        return PatternLibrary(full.reshape(-1, 3, 3))
