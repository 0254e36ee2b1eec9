"""Weight quantizers: projections of a weight onto a grid of (per output channel) scale x level.

Every grid keeps zero, so quantizing the survivors of a pruned weight keeps its structure. Schemes:

    uniform  k-bit symmetric fixed point: levels 0, 1, ..., 2^(k-1) - 1
    pow2     power of two: levels 0 and 2^-e, e = 0 .. 2^(k-1) - 2 (sign + k-1 bits of exponent)
    sp2      sum of two powers of two (Chang et al., "Mix and Match", HPCA 2021): levels a + b,
             a in {0, 2^-i : i < 2^m1 - 1}, b in {0, 2^-i : i < 2^m2 - 1}, m1 + m2 = k - 1, m1 = ceil
    mixed    per output channel SP2 or uniform ("Mix and Match"): the ``sp2_share`` of the channels whose
             weights are the most Gaussian-like (highest kurtosis: mass near zero, where SP2's levels
             are dense) take SP2, the others uniform
    term     Term Quantization (Kung et al.): uniform k-bit values, then in each group of ``group``
             consecutive weights of a channel at most ``terms`` signed power-of-two terms (the set bits
             of the magnitudes) survive, the largest first

The scale of each channel is searched: the one of SCALE_STEPS candidates (fractions of the scale that
maps the channel's largest weight to the top level) with the least squared error.
"""
from __future__ import annotations

import math

import numpy as np

SCHEMES = ("uniform", "pow2", "sp2", "mixed", "term")
SCALE_STEPS = np.linspace(0.5, 1.0, 26)
MAX_BITS = 8


def check_scheme(scheme: str, bits, sp2_share=0.5, group=8, terms=12) -> None:
    """A clear error for a scheme or option out of range."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}, expected one of {', '.join(SCHEMES)}")
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= MAX_BITS:
        raise ValueError(f"quantization bits must be an integer in [2, {MAX_BITS}], got {bits!r}")
    if scheme == "sp2" and bits < 3:
        raise ValueError(f"sp2 needs at least 3 bits (a sign and two exponents), got {bits}")
    if scheme == "mixed" and not (isinstance(sp2_share, (int, float)) and 0 <= sp2_share <= 1):
        raise ValueError(f"mixed: sp2_share must be a number in [0, 1], got {sp2_share!r}")
    for key, value in (("group", group), ("terms", terms)):
        if scheme == "term" and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"term: {key} must be a positive integer, got {value!r}")


def levels(scheme: str, bits: int) -> np.ndarray:
    """The grid's nonnegative levels in units of the scale, ascending, 0 first (uniform, pow2, sp2)."""
    if scheme in ("uniform", "term"):
        return np.arange(2 ** (bits - 1), dtype=np.float64)
    if scheme == "pow2":
        return np.concatenate([[0.0], 2.0 ** -np.arange(2 ** (bits - 1) - 1)[::-1]])
    if scheme == "sp2":
        m1 = math.ceil((bits - 1) / 2)
        m2 = bits - 1 - m1
        a = np.concatenate([[0.0], 2.0 ** -np.arange(2 ** m1 - 1)])
        b = np.concatenate([[0.0], 2.0 ** -np.arange(2 ** m2 - 1)])
        return np.unique(a[:, None] + b[None, :])
    raise ValueError(f"scheme {scheme!r} has no single grid of levels")


def _nearest(x: np.ndarray, lv: np.ndarray) -> np.ndarray:
    """The level nearest to each of x >= 0 (ties to the lower one)."""
    mid = (lv[1:] + lv[:-1]) / 2
    return lv[np.searchsorted(mid, x, side="left")]


def _scaled(rows: np.ndarray, lv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows [K, n] on the grid ``lv`` with each row's best scale: (quantized rows, scales [K])."""
    top = np.abs(rows).max(axis=1)
    best = np.zeros_like(rows)
    best_err = np.full(len(rows), np.inf)
    best_scale = np.zeros(len(rows))
    for step in SCALE_STEPS:
        scale = np.where(top > 0, top * step / lv[-1], 1.0)
        q = np.sign(rows) * _nearest(np.abs(rows) / scale[:, None], lv) * scale[:, None]
        err = ((q - rows) ** 2).sum(axis=1)
        better = err < best_err
        best[better], best_err[better], best_scale[better] = q[better], err[better], scale[better]
    return best, best_scale


def _kurtosis(rows: np.ndarray) -> np.ndarray:
    centred = rows - rows.mean(axis=1, keepdims=True)
    var = (centred ** 2).mean(axis=1)
    return np.where(var > 0, (centred ** 4).mean(axis=1) / np.maximum(var, 1e-300) ** 2, 0.0)


def _term_budget(codes: np.ndarray, group: int, terms: int) -> np.ndarray:
    """Integer codes [K, n]: in each group of ``group`` consecutive codes of a row, the ``terms``
    largest power-of-two terms of the magnitudes (their set bits) survive."""
    K, n = codes.shape
    pad = -n % group
    mag = np.pad(np.abs(codes), ((0, 0), (0, pad))).reshape(K, -1, group)
    bits = int(mag.max(initial=0)).bit_length()
    if bits == 0:
        return codes
    exps = np.arange(bits - 1, -1, -1)                                   # largest term first
    on = (mag[..., None] >> exps) & 1                                    # [K, G, group, bits]
    # rank the terms of a group: by exponent, then by position in the group
    order = np.transpose(on, (0, 1, 3, 2)).reshape(K, -1, bits * group)  # exponent-major
    kept = (np.cumsum(order, axis=2) <= terms) & (order == 1)
    kept = np.transpose(kept.reshape(K, -1, bits, group), (0, 1, 3, 2))
    value = (kept * (1 << exps)).sum(axis=3).reshape(K, -1)[:, :n]
    return np.sign(codes) * value


def quantize(w: np.ndarray, scheme: str, bits: int, sp2_share: float = 0.5, group: int = 8,
             terms: int = 12) -> np.ndarray:
    """``w`` [K, ...] projected onto the scheme's grid, a scale per output channel (row k); zeros stay
    zero. ``sp2_share``: mixed's share of SP2 channels; ``group`` / ``terms``: term's budget."""
    check_scheme(scheme, bits, sp2_share, group, terms)
    rows = np.asarray(w, dtype=np.float64).reshape(len(w), -1)
    if scheme in ("uniform", "pow2", "sp2"):
        q, _ = _scaled(rows, levels(scheme, bits))
    elif scheme == "mixed":
        q, _ = _scaled(rows, levels("uniform", bits))
        n_sp2 = int(round(sp2_share * len(rows)))
        if n_sp2:
            sp2 = np.argsort(-_kurtosis(rows), kind="stable")[:n_sp2]
            q[sp2], _ = _scaled(rows[sp2], levels("sp2", bits))
    else:   # term
        uniform, scale = _scaled(rows, levels("uniform", bits))
        codes = np.round(uniform / scale[:, None]).astype(np.int64)
        q = _term_budget(codes, group, terms) * scale[:, None]
    return q.reshape(np.shape(w)).astype(np.asarray(w).dtype)
