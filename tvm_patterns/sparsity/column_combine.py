"""Column combining (Kung, McDanel and Zhang, ASPLOS 2019) as plain numpy: projection and recognition.

The columns (input channels) of a weight matrix ``w2d`` [rows, cols] are combined in groups of ``g``
consecutive columns (the last group may be shorter); in each group a row keeps only its largest
weight, the others (the group's conflicts) are pruned. The combined matrix is dense, a row per
filter and a column per group, plus one channel index per entry: ``ceil(cols / g)`` weights a row,
``g`` times fewer than dense. The paper groups columns of an already sparse matrix greedily; here the
groups are fixed (consecutive channels) and training (ADMM or masked retraining) adapts the weights
to them, which keeps the structure checkable from the weights alone.
"""
from __future__ import annotations

import numpy as np


def check_group(group, what: str = "column_combine") -> int:
    if isinstance(group, bool) or not isinstance(group, (int, np.integer)) or group < 2:
        raise ValueError(f"{what}: group must be an integer >= 2 (columns combined into one), got {group!r}")
    return int(group)


def _grouped(w: np.ndarray, g: int) -> np.ndarray:
    """[rows, n_groups, g] view of |w| with the last group padded by zeros."""
    rows, cols = w.shape
    n = -(-cols // g)
    padded = np.zeros((rows, n * g), dtype=np.float64)
    padded[:, :cols] = np.abs(w)
    return padded.reshape(rows, n, g)


def project_column_combine(w2d: np.ndarray, group: int) -> np.ndarray:
    """Euclidean projection: in each group of ``group`` consecutive columns, every row keeps its
    largest-magnitude weight (ties: the lower column) and loses the others."""
    w = np.asarray(w2d)
    if w.ndim != 2:
        raise ValueError(f"column combining: expected a 2-D weight [rows, cols], got shape {w.shape}")
    g = check_group(group)
    rows, cols = w.shape
    keep = np.argmax(_grouped(w, g), axis=2)                          # [rows, n_groups]
    col = keep + np.arange(keep.shape[1])[None, :] * g
    out = np.zeros_like(w)
    r = np.repeat(np.arange(rows), keep.shape[1])
    c = col.reshape(-1)
    inside = c < cols
    out[r[inside], c[inside]] = w[r[inside], c[inside]]
    return out


def is_column_combined(w2d: np.ndarray, group: int) -> bool:
    """Whether every row has at most one nonzero in each group of ``group`` consecutive columns."""
    w = np.asarray(w2d)
    return bool(((_grouped(w, int(group)) != 0).sum(axis=2) <= 1).all())


def find_group(w2d: np.ndarray, candidates=(16, 8, 4, 2)) -> int | None:
    """The largest candidate g the matrix is column-combined with, or None."""
    for g in sorted(candidates, reverse=True):
        if is_column_combined(w2d, g):
            return g
    return None
