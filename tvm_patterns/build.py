"""``tvm_patterns.build``: ``tvm.compile`` with our rewrite and schedules in the Relax pipeline."""
from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu

from .passes import ApplySchedules, SparseRewrite
from .targets import host


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
        front.append(SparseRewrite(kinds, options, report))

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


def build(mod: tvm.IRModule, target=None, *, kinds=None, library=None, max_density=None,
          options=None, report=None, sparse: bool = True, tuning_log: str | None = None):
    """Compile a Relax module with our sparse kernels; returns a ``tvm.runtime.Executable``.

    target: a ``tvm.target.Target`` (default: ``targets.host()``); library / max_density: options of
    the "pattern" kind; options: {kind: {option: value}} for any kind; report: a list receiving one
    ``LayerDecision`` per operator looked at; tuning_log: a ``tvm-patterns tune`` log directory
    (``tuning_logs`` or ``tuning_logs/<target name>``): kernels with a record get the best one,
    the others their default schedule.
    """
    target = target or host()
    options = dict(options or {})
    pattern_opts = dict(options.get("pattern", {}))
    if library is not None:
        pattern_opts["library"] = library
    if max_density is not None:
        pattern_opts["max_density"] = max_density
    options["pattern"] = pattern_opts
    extra = []
    if tuning_log is not None:
        from .tuning.apply import ApplyTuningLog   # tuning imports this module

        extra.append(ApplyTuningLog(tuning_log, target))
    return tvm.compile(mod, target, relax_pipeline=pipeline(target, kinds, options, report, sparse, extra))
