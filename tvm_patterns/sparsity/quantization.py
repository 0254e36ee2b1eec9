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
             consecutive nonzero weights of a channel at most ``terms`` signed power-of-two terms (the
             set bits of the magnitudes) survive, the largest first

The scale of each channel is searched: the one of SCALE_STEPS candidates (fractions of the scale that
maps the channel's largest weight to the top level) with the least squared error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

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
    if lv[0] == 0 and (np.diff(lv) == 1).all():             # the integers 0 .. n: no search
        return np.minimum(np.ceil(x - 0.5), lv[-1])
    mid = (lv[1:] + lv[:-1]) / 2
    return lv[np.searchsorted(mid, x, side="left")]


def _snap(rows: np.ndarray, lv: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Rows [K, n] on the levels ``lv`` times each row's ``scale`` [K]."""
    return np.sign(rows) * _nearest(np.abs(rows) / scale[:, None], lv) * scale[:, None]


def _scaled(rows: np.ndarray, lv: np.ndarray) -> np.ndarray:
    """The best of the SCALE_STEPS scales of each row [K, n] on the grid ``lv`` (least squared error): [K]."""
    top = np.abs(rows).max(axis=1)
    best_err = np.full(len(rows), np.inf)
    best_scale = np.ones(len(rows))
    row, col = np.nonzero(rows)                  # a zero stays zero on every grid: only the nonzeros err
    values = np.abs(rows[row, col])
    for step in SCALE_STEPS:
        scale = np.where(top > 0, top * step / lv[-1], 1.0)
        err = np.bincount(row, (_nearest(values / scale[row], lv) * scale[row] - values) ** 2, minlength=len(rows))
        better = err < best_err
        best_err[better], best_scale[better] = err[better], scale[better]
    return best_scale


def _kurtosis(rows: np.ndarray) -> np.ndarray:
    centred = rows - rows.mean(axis=1, keepdims=True)
    var = (centred ** 2).mean(axis=1)
    safe = np.where(var > 0, var, 1.0)
    return np.where(var > 0, (centred ** 4).mean(axis=1) / safe / safe, 0.0)   # two divides: var ** 2 underflows


def _term_budget(codes: np.ndarray, group: int, terms: int) -> np.ndarray:
    """Integer codes [K, n]: in each group of ``group`` consecutive nonzero codes of a row (the values
    a packed format stores), the ``terms`` largest power-of-two terms of the magnitudes (their set
    bits) survive."""
    K, n = codes.shape
    order = np.argsort(codes == 0, axis=1, kind="stable")                # each row's nonzeros first
    packed = np.take_along_axis(codes, order, axis=1)
    pad = -n % group
    mag = np.pad(np.abs(packed), ((0, 0), (0, pad))).reshape(K, -1, group)
    bits = int(mag.max(initial=0)).bit_length()
    if bits == 0:
        return codes
    exps = np.arange(bits - 1, -1, -1)                                   # largest term first
    on = (mag[..., None] >> exps) & 1                                    # [K, G, group, bits]
    # rank the terms of a group: by exponent, then by position in the group
    ranked = np.transpose(on, (0, 1, 3, 2)).reshape(K, -1, bits * group)  # exponent-major
    kept = (np.cumsum(ranked, axis=2) <= terms) & (ranked == 1)
    kept = np.transpose(kept.reshape(K, -1, bits, group), (0, 1, 3, 2))
    value = (kept * (1 << exps)).sum(axis=3).reshape(K, -1)[:, :n]
    out = np.empty_like(codes)
    np.put_along_axis(out, order, np.sign(packed) * value, axis=1)
    return out


@dataclass(frozen=True, eq=False)
class Grid:
    """A weight's quantization grid: per output channel a scale and its levels (SP2 or not, for mixed).
    ``snap`` puts any weight of that shape on it: the quantizer of straight-through retraining keeps
    the grid it found when the masks were set, so the forward and the final weight agree."""
    scheme: str
    bits: int
    scale: np.ndarray        # [K] float64
    sp2: np.ndarray          # [K] bool: the channel's levels are SP2's (scheme sp2, or mixed's choice)
    group: int = 8
    terms: int = 12

    def snap(self, w: np.ndarray) -> np.ndarray:
        rows = np.asarray(w, dtype=np.float64).reshape(len(w), -1)
        if self.scheme == "pow2":
            q = _snap(rows, levels("pow2", self.bits), self.scale)
        else:
            q = _snap(rows, levels("uniform", self.bits), self.scale)
            if self.sp2.any():
                q[self.sp2] = _snap(rows[self.sp2], levels("sp2", self.bits), self.scale[self.sp2])
        if self.scheme == "term":
            codes = np.round(q / self.scale[:, None]).astype(np.int64)
            q = _term_budget(codes, self.group, self.terms) * self.scale[:, None]
        return q.reshape(np.shape(w)).astype(np.asarray(w).dtype)


def fit_grid(w: np.ndarray, scheme: str, bits: int, sp2_share: float = 0.5, group: int = 8,
             terms: int = 12) -> Grid:
    """The grid of ``w`` [K, ...]: each channel's scale searched (see the module's docstring)."""
    check_scheme(scheme, bits, sp2_share, group, terms)
    rows = np.asarray(w, dtype=np.float64).reshape(len(w), -1)
    sp2 = np.full(len(rows), scheme == "sp2")
    if scheme == "mixed":
        n_sp2 = int(round(sp2_share * len(rows)))
        sp2[np.argsort(-_kurtosis(rows), kind="stable")[:n_sp2]] = True
    scale = _scaled(rows, levels("pow2" if scheme == "pow2" else "uniform", bits))
    if sp2.any():
        scale[sp2] = _scaled(rows[sp2], levels("sp2", bits))
    return Grid(scheme, bits, scale, sp2, group, terms)


def quantize(w: np.ndarray, scheme: str, bits: int, sp2_share: float = 0.5, group: int = 8,
             terms: int = 12) -> np.ndarray:
    """``w`` [K, ...] projected onto the scheme's grid, a scale per output channel (row k); zeros stay
    zero. ``sp2_share``: mixed's share of SP2 channels; ``group`` / ``terms``: term's budget."""
    return fit_grid(w, scheme, bits, sp2_share, group, terms).snap(w)


def input_grid(low: float, high: float) -> tuple[float, int]:
    """(scale, zero point) of the uint8 grid of activations in [low, high] (static int8: a calibrated range),
    widened to hold 0.0 exactly: scale = (high - low) / 255, zero point = the code of 0.0."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"calibrated range [{low}, {high}] is not finite")
    scale = (high - low) / 255 if high > low else 1.0
    return scale, int(np.clip(np.round(-low / scale), 0, 255))


@dataclass(frozen=True)
class FoundGrid:
    """A weight found on a grid: ``codes * scale`` (per output channel) is the weight, and the codes
    fit int8. ``scheme``: the levels the codes use (pow2, sp2, uniform, or "mixed: " the channels of each)."""
    scheme: str
    codes: np.ndarray        # [K, ...] int8
    scale: np.ndarray        # [K] float32

    @property
    def largest_code(self) -> int:
        return int(np.abs(self.codes.astype(np.int32)).max(initial=0))


def _ones(m: np.ndarray) -> np.ndarray:
    """The number of set bits of each nonnegative integer of m."""
    return np.array([bin(int(v)).count("1") for v in m.ravel()]).reshape(m.shape)


def find_grid(w: np.ndarray, tolerance: float = 1e-3) -> FoundGrid | None:
    """The int8 grid ``w`` [K, ...] is on, if every channel's weights are integer multiples (at most 127)
    of a unit: a fraction 1/m of the channel's smallest magnitude, the least m that fits. None for
    weights on no such grid (a float weight). Each channel's levels say its scheme: powers of two
    (pow2), sums of two (sp2), any integers (uniform; term's codes are uniform ones)."""
    rows = np.asarray(w, dtype=np.float64).reshape(len(w), -1)
    codes = np.zeros(rows.shape, dtype=np.int64)
    scale = np.ones(len(rows))
    kinds = []
    for k, row in enumerate(rows):
        mag = np.abs(row[row != 0])
        if mag.size == 0:
            continue
        for m in range(1, 128):
            q = mag / (mag.min() / m)
            if q.max() > 127.5:
                return None
            if np.all(np.abs(q - np.round(q)) <= tolerance):
                break
        else:
            return None
        scale[k] = mag.min() / m
        codes[k] = np.round(row / scale[k])
        levels_k = np.unique(np.abs(codes[k][codes[k] != 0]))
        ones = _ones(levels_k // np.gcd.reduce(levels_k))
        kinds.append("pow2" if ones.max() == 1 else "sp2" if ones.max() == 2 else "uniform")
    if len(set(kinds)) <= 1 or set(kinds) == {"pow2", "sp2"}:
        scheme = "sp2" if "sp2" in kinds else kinds[0] if kinds else "uniform"
    else:
        scheme = "mixed: " + ", ".join(f"{kinds.count(s)} {s}" for s in ("pow2", "sp2", "uniform") if s in kinds)
    return FoundGrid(scheme, codes.reshape(np.shape(w)).astype(np.int8), scale.astype(np.float32))
