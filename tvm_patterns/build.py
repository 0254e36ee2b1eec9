"""``tvm_patterns.build``: ``tvm.compile`` with our rewrite and schedules in the Relax pipeline."""
from __future__ import annotations

import tvm
from tvm import relax

from .passes.pipeline import pipeline
from .passes.register_tiles import tir_pipeline
from .passes.registry import check_options
from .targets import as_target
from .tuning.database import ApplyTuningLog


def check_inputs(mod: tvm.IRModule) -> None:
    """Refuse a model whose ``main`` takes an empty tensor (a dimension of 0: batch 0, no channels)
    before any pass or schedule runs, where it would fail deep inside TVM."""
    main = next((f for gv, f in mod.functions_items() if gv.name_hint == "main"), None)
    if not isinstance(main, relax.Function):
        raise ValueError("the module has no Relax function 'main' (import the model with tvm_patterns.from_pytorch)")
    for param in main.params:
        dims = list(getattr(getattr(param.ty, "shape", None), "values", None) or [])
        if any(isinstance(d, tvm.tirx.IntImm) and int(d) == 0 for d in dims):
            raise ValueError(f"input {param.name!r} has shape {[int(d) for d in dims]}: a dimension of 0 "
                             "(batch 0 or no channels) leaves nothing to compute; give at least one of each")


def build(mod: tvm.IRModule, target=None, *, kinds=None, library=None, max_density=None,
          options=None, report=None, sparse: bool = True, tuning_log: str | None = None, int8=None):
    """Compile a Relax module with our sparse kernels; returns a ``tvm.runtime.Executable``.

    target: a ``tvm.target.Target``, a dict, a preset name or a target string (default:
    ``targets.host()``); library / max_density: options of
    the "pattern" and "filter_block" kinds; options: {kind: {option: value}} for any kind; report: a list receiving one
    ``LayerDecision`` per operator looked at; tuning_log: a ``tvm-patterns tune`` log directory
    (``tuning_logs`` or ``tuning_logs/<target name>``): kernels with a record get the best one,
    the others their default schedule. int8: ``tvm_patterns.calibrate``'s input ranges; the
    filter-block pattern convs and block-punched linear layers with a range run in int8 on x86 with
    AVX-512 VNNI or AVX2, block-punched 1x1 convs too where they chain to another int8 layer (or
    ``options={"int8_block": {"conv1x1": True}}``), dense convs (a stem) on x86 where they have enough MACs
    per float element, and the 3x3 convs on aarch64 too: sdot, or smull where the CPU lacks dot product
    (the "int8_filter_block", "int8_block" and "int8_dense_conv" kinds).
    """
    target = as_target(target)
    options = check_options(options)
    check_inputs(mod)
    for kind in ("int8_filter_block", "filter_block", "pattern"):   # the kinds of pattern-sparse 3x3 convs
        opts = dict(options.get(kind, {}))
        if library is not None:
            opts["library"] = library
        if max_density is not None and kind != "int8_filter_block":
            opts["max_density"] = max_density
        options[kind] = opts
    if int8 is not None:
        for kind in ("int8_filter_block", "int8_block", "int8_dense_conv"):
            options[kind] = {**options.get(kind, {}), "ranges": dict(int8)}
    extra = [] if tuning_log is None else [ApplyTuningLog(tuning_log, target)]
    return tvm.compile(mod, target, relax_pipeline=pipeline(target, kinds, options, report, sparse, extra),
                       tir_pipeline=tir_pipeline(target))
