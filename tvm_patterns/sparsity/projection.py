"""Projections of dense weights onto sparsity structures (numpy; the compression code wraps these).

Every projection returns a new array with exactly the promised structure and keeps, among all
weights of that structure, the ones with the largest magnitude (Euclidean projection).
"""
from __future__ import annotations

import numpy as np

from .pattern_library import PatternLibrary


def check_3x3(w: np.ndarray, what: str) -> np.ndarray:
    w = np.asarray(w)
    if w.ndim != 4 or w.shape[2:] != (3, 3):
        raise ValueError(f"{what}: expected a [K, C, 3, 3] weight, got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError(f"{what}: weight has NaN or infinite values")
    return w


def pattern_assignment(w: np.ndarray, library: PatternLibrary) -> np.ndarray:
    """[K, C] int: the library pattern that keeps most of each kernel's energy (sum of squares)."""
    w = check_3x3(w, "pattern projection")
    energy = np.einsum("kcx,px->kcp", (w.astype("float64") ** 2).reshape(*w.shape[:2], 9),
                       library.masks.reshape(library.size, 9).astype("float64"))
    return np.argmax(energy, axis=2)


def project_patterns(w: np.ndarray, library: PatternLibrary) -> np.ndarray:
    """Each 3x3 kernel keeps only the taps of its best library pattern."""
    pid = pattern_assignment(w, library)
    return w * library.masks[pid].astype(w.dtype)


def kernels_to_keep(n_kernels: int, connectivity: float) -> int:
    """Kernels kept for a connectivity-pruning rate (3.6 keeps 1 in 3.6)."""
    if not np.isfinite(connectivity) or connectivity < 1.0:
        raise ValueError(f"connectivity rate must be a finite number >= 1, got {connectivity}")
    return max(1, int(round(n_kernels / connectivity)))


def project_connectivity(w: np.ndarray, connectivity: float) -> np.ndarray:
    """Keep the round(K*C / connectivity) 3x3 kernels with the largest L2 norm in the layer."""
    w = check_3x3(w, "connectivity projection")
    norms = np.sqrt((w.astype("float64") ** 2).sum(axis=(2, 3))).ravel()
    keep = kernels_to_keep(norms.size, connectivity)
    order = np.argsort(-norms, kind="stable")
    mask = np.zeros(norms.size, dtype=bool)
    mask[order[:keep]] = True
    return w * mask.reshape(w.shape[:2] + (1, 1)).astype(w.dtype)


def project_pattern_connectivity(w: np.ndarray, library: PatternLibrary, connectivity: float = 1.0) -> np.ndarray:
    """PatDNN's joint structure: pattern projection, then connectivity on the projected kernels."""
    return project_connectivity(project_patterns(w, library), connectivity)
