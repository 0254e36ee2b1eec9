"""The Relax pipeline of a build: fold constants, rewrite sparse ops, legalize, fuse, schedule, lower."""
from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu

from .column_combine_epilogue import ColumnCombineEpilogue
from .expand_depthwise import ExpandDepthwiseFusion
from .int8_block_kind import CHAINED
from .int8_quantize_epilogue import Int8QuantizeEpilogue
from .int8_requantize import Int8Requantize, unchained_1x1
from .int8_residual_epilogue import Int8ResidualEpilogue
from .rewrite import SparseRewrite
from .schedule_pass import ApplySchedules


def gpu_default_schedules(target) -> list:
    """GPU (OpenCL) targets: every kernel needs thread bindings, so dlight schedules what ours did not."""
    if "gpu" not in target.keys:
        return []
    from tvm.s_tir import dlight as dl

    return [dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                                    dl.gpu.GeneralReduction(), dl.gpu.Fallback())]


def pipeline(target, kinds=None, options=None, report=None, sparse: bool = True,
             extra_tir_passes=()) -> tvm.transform.Pass:
    """The Relax pipeline: fold constants (prune masks, BN), rewrite sparse ops, legalize, fuse,
    then schedule every PrimFunc (ours and the dense ones that remain).

    ``sparse=False`` gives the dense TVM baseline: the same pipeline and dense schedules, no rewrite.
    ``extra_tir_passes`` run after fusion, before our schedules (e.g. applying a tuning database).
    """
    front = [relax.transform.FoldBatchnormToConv2D(), relax.transform.FoldConstant()]
    if sparse:
        if report is None:
            report = []
        front += [_rewrite_chaining_int8(kinds, options or {}, report), Int8ResidualEpilogue(report),
                  Int8QuantizeEpilogue(),
                  ColumnCombineEpilogue(report), ExpandDepthwiseFusion(report)]

    @tvm.transform.module_pass(opt_level=0, name="tvm_patterns.pipeline")
    def _pipeline(mod, _ctx):
        with target:
            seq = tvm.transform.Sequential(
                front
                + cpu.library_dispatch_passes(target)
                + cpu.legalize_passes(target)
                + list(extra_tir_passes)
                + [ApplySchedules(target)]
                + gpu_default_schedules(target)
                + cpu.dataflow_lower_passes(target)
                + cpu.finalize_passes(target))
            return seq(mod)

    return _pipeline


def _rewrite_chaining_int8(kinds, options: dict, report: list) -> tvm.transform.Pass:
    """SparseRewrite then Int8Requantize. With 1x1 convs in int8 only where chained
    (``options["int8_block"]["conv1x1"]``, "chained" by default), the 1x1 convs that end up between float
    layers are rewritten again as float ones, until none is left unchained."""

    @tvm.transform.module_pass(opt_level=0, name="tvm_patterns.rewrite_chaining_int8")
    def _pass(mod, _ctx):
        opts, unchained = dict(options), set()
        while True:
            decisions = []
            out = Int8Requantize(decisions)(SparseRewrite(kinds, opts, decisions)(mod))
            again = unchained_1x1(decisions) - unchained
            if opts.get("int8_block", {}).get("conv1x1", CHAINED) != CHAINED or not again:
                report.extend(decisions)
                return out
            unchained |= again
            opts["int8_block"] = {**opts.get("int8_block", {}), "unchained": sorted(unchained)}

    return _pass
