"""One helper that checks any layer of ours against torch.nn.functional (through the whole path)."""
from __future__ import annotations

import numpy as np
import torch
import tvm
from tvm import relax

import tvm_patterns as tp

RTOL = 1e-4


def run_tvm(model: torch.nn.Module, x: torch.Tensor, report=None, **build_kw) -> np.ndarray:
    ex = tp.build(tp.from_pytorch(model, x), report=report, **build_kw)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x.numpy())).numpy()


def assert_matches_torch(model: torch.nn.Module, x: torch.Tensor, report=None, **build_kw) -> np.ndarray:
    """Build ``model`` with our passes, run it on ``x`` and compare with PyTorch (relative max error)."""
    with torch.no_grad():
        ref = model.eval()(x).numpy()
    out = run_tvm(model, x, report=report, **build_kw)
    assert out.shape == ref.shape
    err = np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30)
    assert err < RTOL, f"relative max error {err:.2e}"
    return out
