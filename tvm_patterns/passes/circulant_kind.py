"""The "circulant" sparse kind: linear layers (matmul with a constant weight) whose weight matrix is
block-circulant (``sparsity.circulant``), run in the frequency domain (``computes.circulant``).

Options (``options={"circulant": {...}}``):
- ``block_candidates``: the block sizes b tried, largest first (default (64, 32, 16, 8, 4));
- ``rtol``: how far from circulant a block may be, relative to the weight's largest magnitude
  (default 1e-6: float32 round-off of trained weights).
"""
from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.target import Target

import schedules  # noqa: F401  (registers every schedule)
from schedules.registry import has_schedule
from tvm_patterns.computes.circulant import CIRCULANT_DENSE, circulant_dense
from tvm_patterns.sparsity.circulant import circulant_spectra, find_block

from .block_kind import matmul_weight
from .registry import LayerContext, LeaveDense, Plan, integers, number, register_sparse_kind

DEFAULT_BLOCKS = (64, 32, 16, 8, 4)
DEFAULT_RTOL = 1e-6


def check_target() -> None:
    """LeaveDense unless a schedule of the circulant kernel is registered for the current target."""
    if not has_schedule(CIRCULANT_DENSE):
        target = Target.current(allow_none=True)
        name = "no target" if target is None else f"target {target.kind.name} ({', '.join(map(str, target.keys))})"
        raise LeaveDense(f"no circulant kernel for {name} (x86, aarch64, Mali and Adreno only)")


def circulant_macs(rows: int, out_f: int, in_f: int, b: int) -> int:
    """Real MACs of the three stages: input DFT, complex products (4 real MACs each), inverse DFT."""
    F = b // 2 + 1
    return rows * (2 * F * in_f + 4 * F * (in_f // b) * (out_f // b) + 2 * F * out_f)


@register_sparse_kind("circulant", ["relax.matmul"], options={"block_candidates": integers(2), "rtol": number(0)})
def plan(call: relax.Call, ctx: LayerContext) -> Plan:
    check_target()
    w2d, shape = matmul_weight(call)
    out_f, in_f = w2d.shape
    b = find_block(w2d, ctx.options.get("block_candidates", DEFAULT_BLOCKS), float(ctx.options.get("rtol", DEFAULT_RTOL)))
    if b is None:
        raise LeaveDense("not block-circulant (no block size among the candidates whose blocks are all circulant)")
    spectra = circulant_spectra(w2d, b)
    rows = int(np.prod(shape[:-1]))
    macs_dense = rows * in_f * out_f
    macs = circulant_macs(rows, out_f, in_f, b)
    if macs >= macs_dense:
        raise LeaveDense(f"block-circulant {b}x{b}, but its transforms cost more MACs than the dense layer "
                         f"({macs} >= {macs_dense}): too small to pay")

    def emit(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        return bb.call_te(circulant_dense, call.args[0], relax.const(spectra.real), relax.const(spectra.imag),
                          relax.const(spectra.forward), relax.const(spectra.inverse),
                          primfunc_name_hint=CIRCULANT_DENSE, primfunc_attrs={"op_pattern": 4})

    return Plan(emit=emit, summary=f"block-circulant {b}x{b}: {spectra.bins} complex bins a block, "
                                   f"{macs_dense / max(macs, 1):.1f}x fewer MACs",
                macs_dense=macs_dense, macs_sparse=macs,
                weight_bytes_packed=spectra.nbytes + spectra.forward.nbytes + spectra.inverse.nbytes)
