"""The Relax pass that swaps dense operators with constant sparse weights for our computes."""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .registry import LayerContext, LeaveDense, check_options, sparse_kinds, static_shape

log = logging.getLogger("tvm_patterns")

LAYER_NAMES_ATTR = "tvm_patterns.layer_names"


def weight_key(array: np.ndarray) -> str:
    """Identifies a weight by value: how the importer's module names find their Relax constants."""
    a = np.ascontiguousarray(array)
    return f"v{a.shape}:{hashlib.sha1(a.tobytes()).hexdigest()}"


def mask_key(array: np.ndarray) -> str:
    """Identifies a weight by its zero pattern, which survives BatchNorm folding (per-filter scales)."""
    a = np.ascontiguousarray(array != 0)
    return f"m{a.shape}:{hashlib.sha1(a.tobytes()).hexdigest()}"


@dataclass
class LayerDecision:
    """One operator the pass looked at."""

    layer: str
    op: str
    kind: str | None        # the sparse kind that took it, None if left dense
    reason: str             # the plan's summary, or why it stayed dense
    macs_dense: int = 0
    macs_sparse: int = 0
    weight_bytes_dense: int = 0     # the float32 weight as imported
    weight_bytes_packed: int = 0    # what the build keeps of it (values and indices; dense: the weight)
    passed_over: str = ""           # why the kinds tried before the one that took it did not

    @property
    def rewritten(self) -> bool:
        return self.kind is not None


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod, kinds, options, report):
        super().__init__(mod)
        self.mod_ = mod
        self.kinds = kinds
        self.options = options
        self.report = report
        names = mod.attrs.get(LAYER_NAMES_ATTR) if mod.attrs is not None else None
        self.names = {str(k): str(v) for k, v in names.items()} if names is not None else {}
        self.var_name = None

    def transform(self):
        for gv, func in self.mod_.functions_items():
            if isinstance(func, relax.Function):
                self.builder_.update_func(gv, self.visit_expr(func))
        return self.builder_.get()

    def visit_var_binding_(self, binding):
        self.var_name = binding.var.name
        super().visit_var_binding_(binding)

    def _layer_name(self, call) -> str:
        if len(call.args) > 1 and isinstance(call.args[1], tvm.ir.Constant):
            w = call.args[1].value.numpy()
            for key in (weight_key(w), mask_key(w)):
                if key in self.names:
                    return self.names[key]
        return self.var_name or "?"

    def _dense_macs(self, call) -> int:
        """Multiply-adds of a conv2d (NCHW) or matmul left dense; 0 where a shape is not static."""
        try:
            out = static_shape(self.builder_.normalize(call), "output")
            if call.op.name == "relax.nn.conv2d":
                return int(np.prod(out)) * int(np.prod(static_shape(call.args[1], "weight")[1:]))
            return int(np.prod(out)) * static_shape(call.args[0])[-1]
        except (LeaveDense, IndexError, RuntimeError):   # TVM raises RuntimeError subclasses
            return 0

    def visit_call_(self, call):
        call = self.visit_expr_post_order(call)
        if not isinstance(call.op, tvm.ir.Op):
            return call
        op = call.op.name
        candidates = [k for k in self.kinds if op in k.ops]
        if not candidates:
            return call
        name = self._layer_name(call)
        reasons = []
        for kind in candidates:
            ctx = LayerContext(name=name, options=self.options.get(kind.name, {}))
            try:
                plan = kind.plan(call, ctx)
            except LeaveDense as e:
                reasons.append(f"{kind.name}: {e}")
                continue
            self.report.append(LayerDecision(name, op, kind.name, plan.summary, plan.macs_dense, plan.macs_sparse,
                                             weight_bytes(call), plan.weight_bytes_packed, "; ".join(reasons)))
            log.info("%s (%s): rewritten as %s: %s", name, op, kind.name, plan.summary)
            return plan.emit(self.builder_, call)
        reason = "; ".join(reasons)
        macs = self._dense_macs(call)
        self.report.append(LayerDecision(name, op, None, reason, macs, macs, weight_bytes(call), weight_bytes(call)))
        log.info("%s (%s): left dense: %s", name, op, reason)
        return call


def weight_bytes(call) -> int:
    """Bytes of a call's constant weight (its second argument), 0 when it has none."""
    w = call.args[1] if len(call.args) > 1 else None
    return int(w.value.numpy().nbytes) if isinstance(w, tvm.ir.Constant) else 0


def SparseRewrite(kinds=None, options: dict | None = None, report: list | None = None) -> tvm.transform.Pass:
    """Rewrite every operator that a registered sparse kind accepts.

    kinds: names of the kinds to try (default: all registered); options: {kind name: {option: value}},
    e.g. {"pattern": {"library": lib, "max_density": 0.5}}; report: a list that receives one
    ``LayerDecision`` per operator looked at (rewritten or not, and why).
    """
    selected = sparse_kinds(kinds)
    options = check_options(options)
    sink = report if report is not None else []

    @tvm.transform.module_pass(opt_level=0, name="SparseRewrite")
    def _pass(mod, _ctx):
        return _Rewriter(mod, selected, options, sink).transform()

    return _pass


def PatternConvRewrite(library=None, max_density: float | None = None, report: list | None = None):
    """Rewrite pattern-sparse 3x3 conv2d only (see ``SparseRewrite``)."""
    opts = {k: v for k, v in (("library", library), ("max_density", max_density)) if v is not None}
    return SparseRewrite(["pattern"], {"pattern": opts}, report)
