"""Block-circulant linear layers in the frequency domain as TE computes (``sparsity.circulant``).

``y = x @ W.T`` with W [out, in] made of b x b circulant blocks, p = out / b output blocks and
q = in / b input blocks, in three stages (rows m of x flattened: [M, in] or [B, T, in]):

    spectrum  X[m, t, f, j] = sum_s x[m, j*b + s] * forward[t, f, s]          real DFT of each input block
    product   Y[m, t, f, i] = sum_j real[f, j, i] * X[m, t, f, j]
                                  + (2t - 1) * imag[f, j, i] * X[m, 1 - t, f, j]   complex MACs, bin by bin
    samples   y[m, i*b + r] = sum_{t, f} Y[m, t, f, i] * inverse[t, f, r]      inverse real DFT

(t = 0: real parts, t = 1: imaginary parts; F = b // 2 + 1 bins.) The product reads F * q * p * 2
numbers where the dense layer reads b * b * q * p: b^2 / (b + 2) times fewer, and does as many
fewer MACs. The two transforms are DFTs by their twiddle tables, (in + out) * (b + 2) MACs a row,
a few percent of the product's for the layers that pay (in, out >> b); the twiddles are constants.
"""
from __future__ import annotations

from tvm import te

from .rows import as_input_rows, flat_rows

CIRCULANT_DENSE = "circulant_dense"                   # the product (main block)
SPECTRUM = CIRCULANT_DENSE + "_spectrum"
SAMPLES = CIRCULANT_DENSE + "_samples"


def circulant_dense(data: te.Tensor, real: te.Tensor, imag: te.Tensor, forward: te.Tensor, inverse: te.Tensor,
                    out_dtype: str = "float32") -> te.Tensor:
    """data [M, in] or [B, T, in]; real, imag [F, q, p]; forward, inverse [2, F, b] -> [M, out] / [B, T, out]."""
    F, q, p = (int(x) for x in real.shape)
    b = int(forward.shape[2])
    if tuple(int(x) for x in imag.shape) != (F, q, p) or F != b // 2 + 1:
        raise ValueError(f"spectra {list(real.shape)} / {list(imag.shape)} do not match a block of {b}")
    M, x_at = flat_rows(data)
    if int(data.shape[-1]) != q * b:
        raise ValueError(f"input features {data.shape[-1]} are not {q} blocks of {b}")

    s = te.reduce_axis((0, b), "s")
    spectrum = te.compute(
        (M, 2, F, q),
        lambda m, t, f, j: te.sum(x_at(m, j * b + s).astype(out_dtype) * forward[t, f, s], axis=s),
        name=SPECTRUM)
    j = te.reduce_axis((0, q), "j")
    product = te.compute(
        (M, 2, F, p),
        lambda m, t, f, i: te.sum(
            real[f, j, i] * spectrum[m, t, f, j]
            + (t * 2 - 1).astype(out_dtype) * imag[f, j, i] * spectrum[m, 1 - t, f, j], axis=j),
        name=CIRCULANT_DENSE, attrs={"circulant_block": b})
    tf = te.reduce_axis((0, 2 * F), "tf")
    samples = te.compute(
        (M, p * b),
        lambda m, o: te.sum(product[m, tf // F, tf % F, o // b] * inverse[tf // F, tf % F, o % b], axis=tf),
        name=SAMPLES)
    return as_input_rows(samples, data, SAMPLES + "_out")
