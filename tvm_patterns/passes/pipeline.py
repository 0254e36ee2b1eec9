"""The Relax pipeline of a build: fold constants, rewrite sparse ops, legalize, fuse, schedule, lower."""
from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu

from .column_combine_epilogue import ColumnCombineEpilogue
from .expand_depthwise import ExpandDepthwiseFusion
from .int8_quantize_epilogue import Int8QuantizeEpilogue
from .int8_requantize import Int8Requantize
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
        front += [SparseRewrite(kinds, options, report), Int8Requantize(report), Int8QuantizeEpilogue(),
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
