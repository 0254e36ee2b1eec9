"""Calibration for static int8: the range of each conv's input on data the user passes.

    ranges = tvm_patterns.calibrate(model, [x0, x1, ...])          # a few batches
    ex = tvm_patterns.build(tvm_patterns.from_pytorch(model, x0), int8=ranges)

A range becomes the layer input's uint8 grid (``sparsity.quantization.input_grid``). ``percentile`` < 100 clips the outliers: the
range runs from the (100 - percentile)th to the percentile-th percentile of the values.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

MAX_SAMPLES = 1 << 20   # values kept per layer for a percentile (a random subset of larger inputs)


def calibrate(model: nn.Module, batches, percentile: float = 100.0, seed: int = 0) -> dict[str, tuple[float, float]]:
    """{module name: (low, high)} of the input of every nn.Conv2d and nn.Linear of ``model`` over
    ``batches`` (an iterable of input tensors, or of tuples of them), in eval mode."""
    if not (isinstance(percentile, (int, float)) and 50 < percentile <= 100):
        raise ValueError(f"percentile must be in (50, 100], got {percentile!r}")
    rng = np.random.default_rng(seed)
    seen: dict[str, list[np.ndarray]] = {}

    def record(name):
        def hook(module, inputs):
            x = inputs[0].detach().float().cpu().numpy().ravel()
            if percentile == 100:
                x = np.array([x.min(), x.max()])
            elif x.size > MAX_SAMPLES:
                x = rng.choice(x, MAX_SAMPLES, replace=False)
            seen.setdefault(name, []).append(x)
        return hook

    hooks = [m.register_forward_pre_hook(record(n)) for n, m in model.named_modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    try:
        with torch.no_grad():
            n = 0
            for batch in batches:
                model(*(batch if isinstance(batch, (tuple, list)) else (batch,)))
                n += 1
    finally:
        for h in hooks:
            h.remove()
    if n == 0:
        raise ValueError("calibration needs at least one batch")
    ranges = {}
    for name, parts in seen.items():
        values = np.concatenate(parts)
        lo, hi = (values.min(), values.max()) if percentile == 100 else np.percentile(values, [100 - percentile, percentile])
        ranges[name] = (float(lo), float(hi))
    return ranges
