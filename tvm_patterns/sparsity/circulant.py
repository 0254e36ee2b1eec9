"""Block-circulant weight matrices (CirCNN) as plain numpy: projection, recognition and spectra.

A weight matrix ``w2d`` [rows, cols] (a linear layer's [out, in], a 1x1 conv's [K, C]) is cut into
``b x b`` blocks; block (i, j) is circulant, ``B[r, s] = c[i, j, (r - s) % b]``, defined by its first
column ``c[i, j]`` (b values instead of b * b). Its product with a vector is a circular convolution,
so in the frequency domain it is ``Y_i = sum_j C_ij * X_j`` bin by bin, with ``C_ij = rfft(c[i, j])``:
``b // 2 + 1`` complex bins per block (b real numbers of information), O(n / b) MACs per output.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def check_block(block, rows: int, cols: int, what: str = "circulant") -> int:
    """b: an integer >= 2 dividing both dimensions of the [rows, cols] matrix."""
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 2:
        raise ValueError(f"{what}: block must be an integer >= 2, got {block!r}")
    if rows % block or cols % block:
        raise ValueError(f"{what}: block {block} does not divide the weight's [{rows}, {cols}] "
                         f"(rows and columns must be multiples of it)")
    return int(block)


def _diagonal_index(b: int) -> np.ndarray:
    """d[r, s] = (r - s) % b: which defining value sits at (r, s) of a circulant block."""
    r = np.arange(b)
    return (r[:, None] - r[None, :]) % b


def circulant_vectors(w2d: np.ndarray, block: int) -> np.ndarray:
    """c [rows/b, cols/b, b]: each block's mean along its circulant diagonals (the least-squares
    circulant nearest to the block)."""
    w = np.asarray(w2d)
    b = check_block(block, *w.shape)
    p, q = w.shape[0] // b, w.shape[1] // b
    blocks = w.reshape(p, b, q, b).transpose(0, 2, 1, 3)              # [p, q, r, s]
    d = _diagonal_index(b)
    c = np.zeros((p, q, b), dtype=np.float64)
    np.add.at(c, (slice(None), slice(None), d), blocks.astype(np.float64))
    return (c / b).astype(w.dtype)


def expand_circulant(c: np.ndarray) -> np.ndarray:
    """The [p*b, q*b] matrix of defining vectors c [p, q, b]."""
    p, q, b = c.shape
    return c[:, :, _diagonal_index(b)].transpose(0, 2, 1, 3).reshape(p * b, q * b)


def project_circulant(w2d: np.ndarray, block: int) -> np.ndarray:
    """Euclidean projection onto block-circulant matrices with ``block x block`` blocks."""
    return expand_circulant(circulant_vectors(w2d, block))


def is_block_circulant(w2d: np.ndarray, block: int, rtol: float = 1e-6) -> bool:
    """Whether every b x b block is circulant, up to ``rtol`` of the matrix's largest magnitude
    (trained weights are stored in float32: their diagonals agree to round-off)."""
    w = np.asarray(w2d)
    if block < 2 or w.shape[0] % block or w.shape[1] % block:
        return False
    scale = float(np.abs(w).max()) if w.size else 0.0
    return bool(np.abs(w - project_circulant(w, block)).max(initial=0.0) <= rtol * max(scale, 1e-30))


def find_block(w2d: np.ndarray, candidates=(64, 32, 16, 8, 4, 2), rtol: float = 1e-6) -> int | None:
    """The largest candidate b whose blocks are all circulant, or None."""
    for b in sorted(candidates, reverse=True):
        if is_block_circulant(w2d, b, rtol):
            return b
    return None


@dataclass(frozen=True)
class CirculantSpectra:
    """What the frequency-domain compute reads for a block-circulant [rows, cols] matrix.

    real, imag [F, q, p]: rfft of each block's defining vector, bins outermost, output blocks
    innermost (the vector axis at batch 1); F = b // 2 + 1.
    forward [2, F, b]: the real DFT of an input block, real part (cos) and imaginary part (-sin).
    inverse [2, F, b]: the inverse real DFT, taking the bins' real and imaginary parts back to b
    samples (Hermitian symmetry folded in: bins other than 0 and b/2 count twice).
    """
    block: int
    real: np.ndarray
    imag: np.ndarray
    forward: np.ndarray
    inverse: np.ndarray

    @property
    def bins(self) -> int:
        return self.real.shape[0]

    @property
    def shape(self) -> tuple:
        F, q, p = self.real.shape
        return p * self.block, q * self.block

    @property
    def nbytes(self) -> int:
        return self.real.nbytes + self.imag.nbytes


def dft_tables(b: int) -> tuple[np.ndarray, np.ndarray]:
    """(forward [2, F, b], inverse [2, F, b]) float32 twiddles of the real DFT of size b."""
    F = b // 2 + 1
    f = np.arange(F)[:, None]
    s = np.arange(b)[None, :]
    angle = 2.0 * np.pi * f * s / b
    forward = np.stack([np.cos(angle), -np.sin(angle)])
    weight = np.where((f == 0) | (2 * f == b), 1.0, 2.0) / b
    inverse = np.stack([weight * np.cos(angle), -weight * np.sin(angle)])
    return forward.astype(np.float32), inverse.astype(np.float32)


def circulant_spectra(w2d: np.ndarray, block: int) -> CirculantSpectra:
    """The spectra of a block-circulant matrix (its blocks' defining vectors, as ``circulant_vectors``)."""
    c = circulant_vectors(np.asarray(w2d, dtype=np.float64), block)   # [p, q, b]
    spec = np.fft.rfft(c, axis=-1)                                      # [p, q, F]
    real = np.ascontiguousarray(spec.real.transpose(2, 1, 0), dtype=np.float32)
    imag = np.ascontiguousarray(spec.imag.transpose(2, 1, 0), dtype=np.float32)
    forward, inverse = dft_tables(block)
    return CirculantSpectra(block, real, imag, forward, inverse)
