"""The Relax pass that moves an int8 1x1 conv's float epilogue into its write-back.

An int8 1x1 conv leaves ``SparseRewrite`` writing int32 sums that a second kernel dequantizes; at the
end of a ResNet block that kernel also adds the bias and the residual and applies the ReLU:

    sums = int8 1x1(x)  ->  dequantize  ->  + bias  ->  + residual  ->  relu  ->  y  ->  quantize -> next 1x1
                                                                                 y  ->  (the next residual)

Here the conv writes y itself (``int8_block_sparse_conv2d_1x1_x86`` with ``residual``): no int32 sums
are written and read back. Where y is quantized at every position for a next int8 1x1 conv, the conv
writes those codes beside y too, and the quantization kernel goes. The same float32 operations in
the same order as the fused float epilogue, so the same y and codes (a test compares the builds).
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from schedules.int8_block_sparse_conv2d_1x1_x86 import int8_block_sparse_conv2d_1x1_x86

from .binding_chains import known_shape, per_channel, rewrite_functions, single_use_call, tir_attr
from .int8_block_kind import CONV_KERNEL, POSITIONS_LAYOUT
from .int8_filter_block_kind import CONV_ATTR, DEQUANTIZE_ATTR, LAYOUT_ATTR, written_out
from .registry import LAYER_ATTR

RESIDUAL = "adds its bias, residual and ReLU in its write-back"
WITH_CODES = "and writes the next int8 layer's codes beside"


@mutator
class _ResidualEpilogue(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, report: list):
        super().__init__(mod)
        self.mod_ = mod
        self.report = report
        self.values: dict = {}
        self.uses: dict = {}
        self.quantized: dict = {}     # float var -> [(binding var, grid)] of its quantizations at every position
        self.codes: dict = {}         # such a binding var -> the codes a conv writes in its place

    def transform(self) -> tvm.IRModule:
        return rewrite_functions(self, self.mod_, prepare=_find_quantizations)

    def _chain(self, var, value):
        """(dequantize, conv, bias, residual, relu?) of ``var = value``: relu(residual + (dequantize(conv) +
        bias)) or the same without a ReLU after it, each step used once; None otherwise."""
        relu, add = False, value
        if isinstance(value, relax.Call) and value.op == tvm.ir.Op.get("relax.nn.relu"):
            relu, add = True, single_use_call(self.values, self.uses, value.args[0], tvm.ir.Op.get("relax.add"))
        elif self.uses.get(var, 0) == 1 and any(         # the ReLU after it takes the chain
                isinstance(v, relax.Call) and v.op == tvm.ir.Op.get("relax.nn.relu") and v.args[0].same_as(var)
                for v in self.values.values()):
            return None
        if not (isinstance(add, relax.Call) and add.op == tvm.ir.Op.get("relax.add")):
            return None
        for biased, residual in (add.args, add.args[::-1]):
            inner = single_use_call(self.values, self.uses, biased, tvm.ir.Op.get("relax.add"))
            if inner is None:
                continue
            dequantize, bias = inner.args if isinstance(inner.args[1], tvm.ir.Constant) else inner.args[::-1]
            dequantize = single_use_call(self.values, self.uses, dequantize)
            if dequantize is None or tir_attr(self.mod_, dequantize, DEQUANTIZE_ATTR) is None:
                continue
            conv = single_use_call(self.values, self.uses, dequantize.args[1].fields[0])
            attr = tir_attr(self.mod_, conv, CONV_ATTR)
            if attr is None or str(attr[0]) != CONV_KERNEL or known_shape(residual) != known_shape(dequantize):
                continue
            return dequantize, conv, bias, residual, relu
        return None

    def visit_var_binding_(self, binding):
        if binding.var in self.codes:                         # a quantization a conv before already wrote
            self.set_var_remap(binding.var, self.codes[binding.var])
            return
        value = binding.value
        chain = self._chain(binding.var, value)
        if chain is None:
            return super().visit_var_binding_(binding)
        dequantize, conv, bias, residual, relu = chain
        _, *geometry = tir_attr(self.mod_, conv, CONV_ATTR)
        n, c, h, w, k, blocks, rows, quads, vnni = (int(v) for v in geometry)
        bias_k = per_channel(bias, k)
        if bias_k is None or binding.var.ty.dtype != "float32":
            return super().visit_var_binding_(binding)
        weight_scale = dequantize.args[1].fields[1].value.numpy()
        scale = np.zeros((blocks * rows, 2), "float32")
        scale[:k, 0] = weight_scale * np.float32(float(tir_attr(self.mod_, dequantize, DEQUANTIZE_ATTR)))
        scale[:k, 1] = bias_k
        quantizations = self.quantized.get(binding.var, [])
        codes = bool(quantizations)
        kernel = written_out(int8_block_sparse_conv2d_1x1_x86(n, c, (h, w), k, blocks, rows, quads, bool(vnni),
                                                              residual=True, relu=relu, codes=codes))
        args = [self.visit_expr(a) for a in conv.args[1].fields] + [relax.const(scale), self.visit_expr(residual)]
        out = [relax.TensorType((n, k, h, w), "float32")]
        if codes:
            args.append(quantizations[0][1])
            out.append(relax.TensorType((n, k, h, w), "uint8"))
        call = self.builder_.emit(relax.call_tir(self.builder_.add_func(kernel, f"{CONV_KERNEL}_residual"),
                                                 relax.Tuple(args), out if codes else out[0]))
        self.set_var_remap(binding.var, self.builder_.emit(relax.TupleGetItem(call, 0)) if codes else call)
        if codes:
            written = self.builder_.emit(relax.TupleGetItem(call, 1))
            grid = quantizations[0][1].value.numpy().tobytes()
            for var, g in quantizations:
                if g.value.numpy().tobytes() == grid:
                    self.codes[var] = written
        layer = str(tir_attr(self.mod_, conv, LAYER_ATTR))
        for decision in self.report:
            if decision.layer == layer and decision.kind == "int8_block":
                decision.reason += f"; {RESIDUAL}" + (f" {WITH_CODES}" if codes else "")


def _find_quantizations(mutator) -> None:
    """Each float var's quantizations at every position (a stride-1 int8 1x1 conv's input)."""
    mutator.quantized, mutator.codes = {}, {}
    for var, value in mutator.values.items():
        layout = tir_attr(mutator.mod_, value, LAYOUT_ATTR)
        if layout is None or str(layout[0]) != POSITIONS_LAYOUT or [int(s) for s in layout[5:]] != [1, 1]:
            continue
        x, grid = value.args[1].fields
        if isinstance(x, relax.Var) and isinstance(grid, tvm.ir.Constant) and x.ty.dtype == "float32":
            mutator.quantized.setdefault(x, []).append((var, grid))


def Int8ResidualEpilogue(report: list | None = None) -> tvm.transform.Pass:   # noqa: N802  (a pass, named like TVM's)
    """Fuse an int8 1x1 conv's dequantization, bias, residual add and ReLU (and the next int8 1x1 conv's
    quantization of the result) into its write-back; the ``LayerDecision`` of each such layer says so."""
    sink = report if report is not None else []

    @tvm.transform.module_pass(opt_level=0, name="Int8ResidualEpilogue")
    def _pass(mod, _ctx):
        return _ResidualEpilogue(mod, sink).transform()

    return _pass
