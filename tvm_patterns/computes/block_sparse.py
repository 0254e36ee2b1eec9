"""Block-punched sparse linear layers and 1x1 convolutions as TE computes.

The weight is a ``BlockPunched`` matrix (``tvm_patterns.sparsity.block``): output channels cut into
blocks of ``R`` rows, each block keeping the same ``width`` input columns:

    col_idx [n_blocks, width] int32,  values [n_blocks, width, R] float32

Both computes run the same main block over a padded output, with the vector axis innermost and
contiguous in the input:

    main[b, o, s...] = sum_{j < width} values[o // R, j, o % R] * xp[b, col_idx[o // R, j], s...]

- 1x1 conv, NCHW, stride 1 or 2 (no padding): ``xp`` [N, C, Ho, Wp] is the strided input with the
  output width rounded up to the vector width (a copy stage; skipped when stride 1 and W is a
  multiple of the vector width), ``main`` [N, n_blocks*R, Ho, Wp], cropped to [N, K, Ho, Wo].
- linear ``y = x @ W.T``, x [M, K] or [B, T, K]: ``xp`` [B, K, Tp] is x transposed (tokens become the
  vector axis), ``main`` [B, n_blocks*R, Tp], transposed back (and cropped) to [M, N] / [B, T, N].

Padding entries of the tables carry zero values, so every reduction has the static extent ``width``.
``col_idx=None`` gives the dense layer in the same layout (values [n_blocks, in_features, R]): the
TVM dense baseline with the same schedule.
"""
from __future__ import annotations

from dataclasses import dataclass

from tvm import te

DENSE_BLOCK = "block_sparse_dense"
CONV_BLOCK = "block_sparse_conv2d_1x1"
MAIN_BLOCKS = (DENSE_BLOCK, CONV_BLOCK)
PACK_SUFFIX = "_pack"      # the input copy stage: name of the main block + suffix
OUT_SUFFIX = "_out"        # the crop / transpose stage


def round_up(x: int, v: int) -> int:
    return -(-x // v) * v


@dataclass(frozen=True)
class Conv1x1Geometry:
    """input [N, C, H, W] -> output [N, K, Ho, Wo]; stride (sh, sw) in {1, 2}, no padding."""

    N: int
    C: int
    H: int
    W: int
    K: int
    strides: tuple = (1, 1)
    vector_width: int = 8

    @property
    def out_hw(self) -> tuple:
        sh, sw = self.strides
        return (self.H - 1) // sh + 1, (self.W - 1) // sw + 1

    @property
    def out_w_padded(self) -> int:
        return round_up(self.out_hw[1], self.vector_width)

    def macs_dense(self) -> int:
        ho, wo = self.out_hw
        return self.N * self.K * self.C * ho * wo


def _tables(col_idx, values: te.Tensor, rows: int):
    n_blocks, width, R = (int(x) for x in values.shape)
    if col_idx is not None and tuple(int(x) for x in col_idx.shape) != (n_blocks, width):
        raise ValueError(f"values {list(values.shape)} do not match col_idx {list(col_idx.shape)}")
    if not (n_blocks - 1) * R < rows <= n_blocks * R:
        raise ValueError(f"{n_blocks} blocks of {R} rows cannot hold {rows} output channels")
    return n_blocks, width, R


def block_sparse_conv2d_1x1(data: te.Tensor, col_idx: te.Tensor, values: te.Tensor,
                            geom: Conv1x1Geometry, out_dtype: str = "float32") -> te.Tensor:
    """data [N, C, H, W]; col_idx [n_blocks, width] int32; values [n_blocks, width, R] -> [N, K, Ho, Wo]."""
    N, C, K = geom.N, geom.C, geom.K
    sh, sw = geom.strides
    Ho, Wo = geom.out_hw
    Wp = geom.out_w_padded
    n_blocks, width, R = _tables(col_idx, values, K)
    Kp = n_blocks * R
    if (sh, sw) == (1, 1) and Wp == Wo:
        xp = data
    else:
        xp = te.compute(
            (N, C, Ho, Wp),
            lambda n, c, h, w: te.if_then_else(w < Wo, data[n, c, h * sh, te.min(w, Wo - 1) * sw],
                                               te.const(0, data.dtype)),
            name=CONV_BLOCK + PACK_SUFFIX)
    j = te.reduce_axis((0, width), "j")
    main = te.compute(
        (N, Kp, Ho, Wp),
        lambda n, k, h, w: te.sum(
            values[k // R, j, k % R].astype(out_dtype) * xp[n, j if col_idx is None else col_idx[k // R, j], h, w].astype(out_dtype),
            axis=j),
        name=CONV_BLOCK, attrs={"block_rows": R})
    if (Kp, Wp) == (K, Wo):
        return main
    return te.compute((N, K, Ho, Wo), lambda n, k, h, w: main[n, k, h, w], name=CONV_BLOCK + OUT_SUFFIX)


def block_sparse_dense(data: te.Tensor, col_idx: te.Tensor, values: te.Tensor, out_features: int,
                       vector_width: int = 8, out_dtype: str = "float32") -> te.Tensor:
    """``y = x @ W.T``. data [M, K] or [B, T, K]; col_idx [n_blocks, width] int32 (columns of W, i.e.
    input features); values [n_blocks, width, R] -> [M, out_features] / [B, T, out_features]."""
    if len(data.shape) not in (2, 3):
        raise ValueError(f"data must be [M, K] or [B, T, K], got {list(data.shape)}")
    batched = len(data.shape) == 3
    B, T, Kin = (int(x) for x in data.shape) if batched else (1, *(int(x) for x in data.shape))
    n_blocks, width, R = _tables(col_idx, values, out_features)
    Np, Tp = n_blocks * R, round_up(T, vector_width)

    def x_at(b, t, k):
        return data[b, t, k] if batched else data[t, k]

    xp = te.compute(
        (B, Kin, Tp),
        lambda b, k, t: te.if_then_else(t < T, x_at(b, te.min(t, T - 1), k), te.const(0, data.dtype)),
        name=DENSE_BLOCK + PACK_SUFFIX)
    j = te.reduce_axis((0, width), "j")
    main = te.compute(
        (B, Np, Tp),
        lambda b, o, t: te.sum(
            values[o // R, j, o % R].astype(out_dtype) * xp[b, j if col_idx is None else col_idx[o // R, j], t].astype(out_dtype),
            axis=j),
        name=DENSE_BLOCK, attrs={"block_rows": R})
    if batched:
        return te.compute((B, T, out_features), lambda b, t, o: main[b, o, t], name=DENSE_BLOCK + OUT_SUFFIX)
    return te.compute((T, out_features), lambda t, o: main[0, o, t], name=DENSE_BLOCK + OUT_SUFFIX)
