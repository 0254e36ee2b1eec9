"""Column-combined linear layers at a few rows (``sparsity.column_combine``) as a TE compute.

The weight W [out, in] keeps one value a row in each of G = ceil(in / g) groups of g consecutive input
channels. Packed group-major with the output features innermost, the layer is a dense [G, out] GEMM
whose input is gathered inside each group:

    y[m, o] = sum_{j < G} values[j, o] * x[m, j * g + offset[j, o]]

values [G, out] float32, offset [G, out] uint8 (the channel inside its group, < g); an empty group
has a zero value and offset 0, so every index stays inside the input (no padding). At batch 1 the vector axis is o: each (j, vector of o) loads values, one
byte an offset and gathers the inputs from the g channels of group j (one cache line or two).
"""
from __future__ import annotations

import numpy as np
from tvm import te

from tvm_patterns.sparsity.column_combine import is_column_combined

from .rows import as_input_rows, flat_rows

COLUMN_COMBINE_DENSE = "column_combine_dense"
CROP_ROWS = "column_combine_dense_crop"                  # [M, N'] -> the layer's output, with its epilogue


def pack_column_combined(w2d: np.ndarray, group: int) -> tuple[np.ndarray, np.ndarray]:
    """(values [G, out] float32, offset [G, out] uint8) of a column-combined [out, in] matrix; a row
    with nothing in a group gets a zero value (offset 0)."""
    rows, cols = w2d.shape
    G = -(-cols // group)
    padded = np.zeros((rows, G * group), dtype=np.float32)
    padded[:, :cols] = w2d
    grouped = padded.reshape(rows, G, group)
    if not is_column_combined(w2d, group):
        raise ValueError(f"not column-combined by {group}: a row has two nonzeros in one group")
    offset = np.argmax(grouped != 0, axis=2)                       # [rows, G]; 0 where the group is empty
    values = np.take_along_axis(grouped, offset[:, :, None], axis=2)[:, :, 0]
    return np.ascontiguousarray(values.T), np.ascontiguousarray(offset.T.astype(np.uint8))


def pack_column_combined_conv(w2d: np.ndarray, group: int, out_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(values [G, out_channels] float32, offset [G, out_channels] int32) of a column-combined [K, C]
    1x1 conv weight, the output channels padded with zero values to ``out_channels``."""
    values, offset = pack_column_combined(w2d, group)
    pad = ((0, 0), (0, out_channels - values.shape[1]))
    return np.pad(values, pad), np.pad(offset.astype(np.int32), pad)


def crop_rows(out: te.Tensor, rows_shape: tuple, out_features: int) -> te.Tensor:
    """[M, N'] -> [*rows_shape, out_features] (rows_shape: (M,) or (B, T)); the padding dropped."""
    if len(rows_shape) == 1:
        return te.compute((rows_shape[0], out_features), lambda m, o: out[m, o], name=CROP_ROWS)
    T = rows_shape[1]
    return te.compute((*rows_shape, out_features), lambda b, t, o: out[b * T + t, o], name=CROP_ROWS)


def column_combine_dense(data: te.Tensor, values: te.Tensor, offset: te.Tensor, group: int,
                         out_dtype: str = "float32") -> te.Tensor:
    """data [M, in] or [B, T, in]; values, offset [G, out] -> [M, out] / [B, T, out]."""
    M, x_at = flat_rows(data)
    G, out_f = (int(x) for x in values.shape)
    cin = int(data.shape[-1])
    if -(-cin // group) != G or tuple(int(x) for x in offset.shape) != (G, out_f):
        raise ValueError(f"{G} groups of {group} do not cover {cin} inputs, or offsets {list(offset.shape)} "
                         f"do not match values {list(values.shape)}")

    j = te.reduce_axis((0, G), "j")
    out = te.compute(
        (M, out_f),
        lambda m, o: te.sum(values[j, o].astype(out_dtype)
                            * x_at(m, j * group + offset[j, o].astype("int32")).astype(out_dtype), axis=j),
        name=COLUMN_COMBINE_DENSE, attrs={"column_group": group})
    return as_input_rows(out, data, COLUMN_COMBINE_DENSE + "_out")
