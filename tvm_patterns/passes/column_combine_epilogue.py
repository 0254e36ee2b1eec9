"""The Relax pass that folds a column-combined 1x1 conv's epilogue into its kernel's write-back.

``column_combine_kind`` leaves the AVX-512 conv kernel (``schedules.column_combine_conv2d_1x1_nhwc_x86``)
with a zero bias; what follows it stays as Relax ops. Where the conv's output feeds nothing but

    + bias (a constant a channel)  [+ residual (a tensor of the output's shape)]  [ReLU]

(or a ReLU alone), the chain becomes one call of the kernel built with that epilogue, so the output is
written once instead of going through a second pass (docs/design.md#column-combine).
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from schedules.column_combine_conv2d_1x1_nhwc_x86 import (GEOMETRY_ATTR, KERNEL, Epilogue, Geometry, Knobs,
                                                          column_combine_conv2d_1x1_nhwc_x86)

from .int8_filter_block_kind import written_out
from .binding_chains import known_shape, per_channel, rewrite_functions, single_use_call, tir_attr
from .registry import LAYER_ATTR

FOLDED = "in its write-back"
ADD, RELU = tvm.ir.Op.get("relax.add"), tvm.ir.Op.get("relax.nn.relu")


@mutator
class _Fold(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, report: list):
        super().__init__(mod)
        self.mod_ = mod
        self.report = report
        self.values: dict = {}
        self.uses: dict = {}
        self.consumer: dict = {}    # var used once -> the value that uses it

    def transform(self) -> tvm.IRModule:
        def single_consumers(m):
            m.consumer = {v: value for value in m.values.values()
                          for v in relax.analysis.free_vars(value) if m.uses.get(v) == 1}

        return rewrite_functions(self, self.mod_, single_consumers)

    def _single_use(self, expr, op=None):
        return single_use_call(self.values, self.uses, expr, op)

    def _kernel(self, expr):
        """The kernel call binding ``expr`` if it is one of ours used once, else None."""
        call = self._single_use(expr)
        return call if call is not None and tir_attr(self.mod_, call, GEOMETRY_ATTR) is not None else None

    def _biased(self, expr):
        """(kernel call, bias constant) of ``expr`` = kernel + bias, or None."""
        add = self._single_use(expr, ADD)
        if add is None:
            return None
        for out, bias in (add.args, add.args[::-1]):
            kernel = self._kernel(out)
            if kernel is not None and isinstance(bias, tvm.ir.Constant):
                return kernel, bias
        return None

    def _chain(self, value):
        """(kernel call, bias constant or None, residual or None, relu) of a chain ending in ``value``."""
        relu = isinstance(value, relax.Call) and value.op == RELU
        if relu:
            kernel = self._kernel(value.args[0])
            if kernel is not None:
                return kernel, None, None, True
            value = self._single_use(value.args[0], ADD)
        if not (isinstance(value, relax.Call) and value.op == ADD):
            return None
        for first, second in (value.args, value.args[::-1]):
            kernel = self._kernel(first)
            if kernel is not None:          # kernel + bias, or kernel + residual (a conv without a bias)
                return (kernel, second, None, relu) if isinstance(second, tvm.ir.Constant) else \
                    (kernel, None, second, relu)
            biased = self._biased(first)
            if biased is not None and not isinstance(second, tvm.ir.Constant):
                return (*biased, second, relu)
        return None

    def _fold(self, value):
        """(kernel call, bias [K], residual or None, relu) of a chain ending in ``value`` that the kernel
        can take, or None."""
        chain = self._chain(value)
        if chain is None:
            return None
        kernel, bias, residual, relu = chain
        n, _, h, w, k, *_ = (int(v) for v in tir_attr(self.mod_, kernel, GEOMETRY_ATTR))
        bias_k = np.zeros(k, "float32") if bias is None else per_channel(bias, k)
        if bias_k is None or (residual is not None and (known_shape(residual) != (n, k, h, w)
                                                        or residual.ty.dtype != "float32")):
            return None
        return kernel, bias_k, residual, relu

    def visit_var_binding_(self, binding):
        fold = self._fold(binding.value)
        longer = self._fold(self.consumer[binding.var]) if binding.var in self.consumer else None
        if fold is None or (longer is not None and longer[0].same_as(fold[0])):   # fold once, at the chain's end
            return super().visit_var_binding_(binding)
        kernel, bias_k, residual, relu = fold
        n, c, h, w, k, g, filters, positions, inner = (int(v) for v in tir_attr(self.mod_, kernel, GEOMETRY_ATTR))
        x, values, offset, _ = kernel.args[1].fields
        padded = values.value.numpy().shape[1]
        epilogue = Epilogue(residual=residual is not None, relu=relu)
        func = column_combine_conv2d_1x1_nhwc_x86(Geometry(n, c, h, w, k, g), Knobs(filters, positions, bool(inner)),
                                                  epilogue)
        layer = tir_attr(self.mod_, kernel, LAYER_ATTR)
        func = written_out(func).with_attr(LAYER_ATTR, layer)
        args = [self.visit_expr(x), values, offset, relax.const(np.pad(bias_k, (0, padded - k)))]
        if residual is not None:
            args.append(self.visit_expr(residual))
        folded = self.builder_.emit(relax.call_tir(self.builder_.add_func(func, KERNEL), relax.Tuple(args),
                                                   relax.TensorType((n, k, h, w), "float32")))
        self.set_var_remap(binding.var, folded)
        folded_ops = ["bias"] + ["residual add"] * (residual is not None) + ["ReLU"] * relu
        for decision in self.report:
            if decision.layer == str(layer) and decision.kind == "column_combine":
                decision.reason = decision.reason.split(";")[0] + f"; {', '.join(folded_ops)} {FOLDED}"


def ColumnCombineEpilogue(report: list | None = None) -> tvm.transform.Pass:
    """Fold each AVX-512 column-combined conv's bias, residual add and ReLU into its write-back; the
    ``LayerDecision`` of each such layer in ``report`` says so."""
    sink = report if report is not None else []

    @tvm.transform.module_pass(opt_level=0, name="ColumnCombineEpilogue")
    def _pass(mod, _ctx):
        return _Fold(mod, sink).transform()

    return _pass
