"""``tvm_patterns.build``: ``tvm.compile`` with our rewrite and schedules in the Relax pipeline."""
from __future__ import annotations

import tvm

from .passes.pipeline import pipeline
from .targets import host
from .tuning.database import ApplyTuningLog


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
    extra = [] if tuning_log is None else [ApplyTuningLog(tuning_log, target)]
    return tvm.compile(mod, target, relax_pipeline=pipeline(target, kinds, options, report, sparse, extra))
