"""Torch faces of the numpy projections in ``tvm_patterns.sparsity``.

Each wrapper hands the weight to the one numpy implementation and returns a new tensor on the
weight's device and dtype; nothing here tracks gradients (ADMM's Z-update is not differentiated),
except ``project_circulant``, a linear map written in torch that retraining differentiates through.
"""
from __future__ import annotations

import numpy as np
import torch

from tvm_patterns.sparsity import PatternLibrary
from tvm_patterns.sparsity import projection as _np
from tvm_patterns.sparsity.block import project_block_punched as _np_block_punched
from tvm_patterns.sparsity.column_combine import project_column_combine as _np_column_combine
from tvm_patterns.sparsity.filter_block import project_filter_block_pattern as _np_filter_block_pattern
from tvm_patterns.sparsity.quantization import Grid
from tvm_patterns.sparsity.quantization import quantize as _np_quantize


def _through_numpy(w: torch.Tensor, fn) -> torch.Tensor:
    a = w.detach().cpu()
    if a.dtype not in (torch.float32, torch.float64):
        a = a.float()   # half / bfloat16 have no numpy twin; float32 holds them exactly
    out = fn(a.numpy())
    return torch.from_numpy(np.ascontiguousarray(out)).to(device=w.device, dtype=w.dtype)


def project_patterns(w: torch.Tensor, library: PatternLibrary) -> torch.Tensor:
    """w: [K, C, 3, 3]; each kernel keeps the taps of the library pattern holding most of its energy."""
    return _through_numpy(w, lambda a: _np.project_patterns(a, library))


def project_connectivity(w: torch.Tensor, connectivity: float) -> torch.Tensor:
    """w: [K, C, 3, 3]; keeps the round(K*C / connectivity) kernels with the largest L2 norm."""
    return _through_numpy(w, lambda a: _np.project_connectivity(a, connectivity))


def project_pattern_connectivity(w: torch.Tensor, library: PatternLibrary,
                                 connectivity: float = 1.0) -> torch.Tensor:
    """w: [K, C, 3, 3]; pattern projection, then connectivity on the projected kernels (PatDNN)."""
    return _through_numpy(w, lambda a: _np.project_pattern_connectivity(a, library, connectivity))


def project_filter_block_pattern(w: torch.Tensor, library: PatternLibrary, connectivity: float = 1.0,
                                 filters: int = 4) -> torch.Tensor:
    """w: [K, C, 3, 3]; blocks of ``filters`` consecutive filters share their kept kernels and each
    kernel's pattern (one (block, channel) kernel kept in ``connectivity``)."""
    return _through_numpy(w, lambda a: _np_filter_block_pattern(a, library, connectivity, filters))


def project_block_punched(w: torch.Tensor, block_rows: int, sparsity: float) -> torch.Tensor:
    """w: Linear [out, in] or 1x1 conv [out, in, 1, 1], viewed as [rows=out, cols=in].

    Rows are cut into blocks of ``block_rows`` (the last may be shorter); every row of a block keeps
    the same round((1 - sparsity) * in) columns, those with the largest L2 norm inside the block.
    """
    if w.ndim not in (2, 4) or (w.ndim == 4 and w.shape[2:] != (1, 1)):
        raise ValueError(f"block projection: expected an [out, in] or [out, in, 1, 1] weight, got {tuple(w.shape)}")
    return _through_numpy(w, lambda a: _np_block_punched(a.reshape(a.shape[0], a.shape[1]), block_rows, sparsity).reshape(a.shape))


def _as_matrix(w: torch.Tensor, what: str) -> tuple:
    if w.ndim not in (2, 4) or (w.ndim == 4 and w.shape[2:] != (1, 1)):
        raise ValueError(f"{what}: expected an [out, in] or [out, in, 1, 1] weight, got {tuple(w.shape)}")
    return w.shape[0], w.shape[1]


def project_circulant(w: torch.Tensor, block: int) -> torch.Tensor:
    """w: Linear [out, in] or 1x1 conv [out, in, 1, 1]; every block x block block made circulant (its
    mean along each circulant diagonal). Written in torch, not through numpy: the map is linear, and
    retraining differentiates through it, so the gradient trains each diagonal's defining value."""
    rows, cols = _as_matrix(w, "circulant projection")
    b = block
    p, q = rows // b, cols // b
    r = torch.arange(b, device=w.device)
    diag = (r[:, None] - r[None, :]) % b                                     # [r, s] -> defining index
    onehot = torch.nn.functional.one_hot(diag.reshape(-1), b).to(w.dtype)    # [b*b, b]
    blocks = w.reshape(p, b, q, b).permute(0, 2, 1, 3).reshape(p, q, b * b)
    c = blocks @ onehot / b                                                   # [p, q, b]
    return (c @ onehot.T).reshape(p, q, b, b).permute(0, 2, 1, 3).reshape(w.shape)


def project_column_combine(w: torch.Tensor, group: int) -> torch.Tensor:
    """w: Linear [out, in] or 1x1 conv [out, in, 1, 1]; in each group of ``group`` consecutive input
    channels, every output keeps its largest weight (column combining)."""
    rows, cols = _as_matrix(w, "column combining")
    return _through_numpy(w, lambda a: _np_column_combine(a.reshape(rows, cols), group).reshape(a.shape))


def project_quantized(w: torch.Tensor, scheme: str, bits: int, **options) -> torch.Tensor:
    """w [K, ...] on a quantization grid with a scale per output channel (``sparsity.quantization``)."""
    return _through_numpy(w, lambda a: _np_quantize(a, scheme, bits, **options))


def snap(w: torch.Tensor, grid: Grid) -> torch.Tensor:
    """w on a quantization grid found before (``sparsity.quantization.fit_grid``)."""
    return _through_numpy(w, grid.snap)
