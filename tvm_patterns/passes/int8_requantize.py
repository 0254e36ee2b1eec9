"""The Relax pass that keeps activations 8-bit between int8 convs.

Each int8 conv leaves ``SparseRewrite`` between a quantization of its float input and a
dequantization of its int32 sums (``int8_filter_block_kind``). Where one int8 conv feeds the next
through nothing but its bias, a ReLU and a max pool,

    sums = int8 conv(rowpairs)  ->  dequantize  ->  + bias  ->  relu  ->  max pool  ->  quantize -> rowpairs'

the first conv requantizes its sums onto the second's input grid in its write-back and the chain becomes

    codes = int8 conv(rowpairs) (uint8)  ->  max pool (uint8)  ->  lay out -> rowpairs'

The codes are those the float chain gives: the same float32 operations in the same order, a ReLU as
the lowest code (the zero point), and a max pool commutes with the grid's monotone rounding. The
conv writes a byte per output instead of four, and no float activation is written or read.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from schedules import int8_filter_block_pattern_conv2d_rowpair_x86 as int8_x86
from schedules.int8_quantize_rowpairs_x86 import int8_quantize_rowpairs_x86
from tvm_patterns.sparsity.int8_filter_block import rowpair_shape

from .int8_filter_block_kind import (CONV_ATTR, DEQUANTIZE_ATTR, KERNEL, LAYER_ATTR, QUANTIZE, ROWPAIRS_ATTR,
                                     written_out)

REQUANTIZED = "writes uint8 codes on the next int8 layer's input grid"


def _attr(mod: tvm.IRModule, call, name: str):
    """The attribute ``name`` of the TIR function a call_tir calls, None for any other call."""
    if not (isinstance(call, relax.Call) and call.op == tvm.ir.Op.get("relax.call_tir")):
        return None
    func = mod[call.args[0]]
    return func.attrs.get(name) if func.attrs is not None else None


def _per_channel(const, channels: int) -> np.ndarray | None:
    """A bias constant of shape [1, K, 1, 1] or [K, 1, 1] as [K] float32; None for any other shape."""
    if not isinstance(const, tvm.ir.Constant):
        return None
    a = const.value.numpy()
    if a.dtype != np.float32 or a.shape not in ((1, channels, 1, 1), (channels, 1, 1)):
        return None
    return a.reshape(channels)


@mutator
class _Requantize(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, report: list):
        super().__init__(mod)
        self.mod_ = mod
        self.report = report
        self.values: dict = {}
        self.uses: dict = {}

    def transform(self) -> tvm.IRModule:
        for gv, func in self.mod_.functions_items():
            if isinstance(func, relax.Function):
                bindings = [b for block in func.body.blocks for b in block.bindings]
                self.values = {b.var: b.value for b in bindings}
                self.uses = {}
                for value in self.values.values():
                    for v in relax.analysis.free_vars(value):
                        self.uses[v] = self.uses.get(v, 0) + 1
                for v in relax.analysis.free_vars(func.body.body):
                    self.uses[v] = self.uses.get(v, 0) + 1
                self.builder_.update_func(gv, self.visit_expr(func))
        return relax.transform.DeadCodeElimination()(self.builder_.get())

    def _producer(self, var):
        """The call that binds ``var`` if ``var`` is used only once; through a field of a tuple too (the
        importer's max pool with indices: a tuple of the pool and unused indices)."""
        value = self.values.get(var)
        if isinstance(value, relax.TupleGetItem) and self.uses.get(var, 0) == 1:
            fields = self.values.get(value.tuple_value)
            if isinstance(fields, relax.Tuple) and self.uses.get(value.tuple_value, 0) == 1:
                var = fields.fields[value.index]
                value = self.values.get(var)
        if not isinstance(value, relax.Call) or self.uses.get(var, 0) != 1:
            return None
        return value

    def _chain(self, quantize: relax.Call):
        """(pool call or None, relu?, bias or None, dequantize call, conv call) feeding ``quantize``."""
        x, pool, relu, bias = quantize.args[1].fields[0], None, False, None
        call = self._producer(x)
        if call is not None and call.op == tvm.ir.Op.get("relax.nn.max_pool2d"):
            pool, call = call, self._producer(call.args[0])
        if call is not None and call.op == tvm.ir.Op.get("relax.nn.relu"):
            relu, call = True, self._producer(call.args[0])
        if call is not None and call.op == tvm.ir.Op.get("relax.add"):
            a, b = call.args
            if isinstance(a, tvm.ir.Constant):
                a, b = b, a
            bias, call = b, self._producer(a)
        if call is None or _attr(self.mod_, call, DEQUANTIZE_ATTR) is None:
            return None
        conv = self._producer(call.args[1].fields[0])
        if conv is None or _attr(self.mod_, conv, CONV_ATTR) is None:
            return None
        return pool, relu, bias, call, conv

    def visit_var_binding_(self, binding):
        value = binding.value
        rowpairs = _attr(self.mod_, value, ROWPAIRS_ATTR)
        chain = self._chain(value) if rowpairs is not None else None
        if chain is None:
            return super().visit_var_binding_(binding)
        pool, relu, bias, dequantize, conv = chain
        geometry = [int(v) for v in _attr(self.mod_, conv, CONV_ATTR)]
        n, c, h, w, k, blocks, filters, max_len, patterns, rows, groups, inner = geometry
        channels = blocks * filters
        bias_k = np.zeros(k, "float32") if bias is None else _per_channel(bias, k)
        if bias_k is None:
            return super().visit_var_binding_(binding)
        weight_scale = dequantize.args[1].fields[1].value.numpy()
        sums_scale = weight_scale * np.float32(float(_attr(self.mod_, dequantize, DEQUANTIZE_ATTR)))
        scale = np.zeros((channels, 2), "float32")
        scale[:k, 0], scale[:k, 1] = sums_scale, bias_k
        grid = value.args[1].fields[1].value.numpy()                # (1 / scale, zero point) of the next layer
        lowest = grid[1] if relu else np.float32(0.0)
        kernel = int8_x86.int8_filter_block_pattern_conv2d_rowpair_x86(
            n, c, h, w, k, blocks, filters, max_len, patterns, int8_x86.Knobs(rows, groups, bool(inner)),
            requantize=True)
        conv_args = [self.visit_expr(a) for a in conv.args[1].fields]
        codes = self.builder_.emit(relax.call_tir(
            self.builder_.add_func(written_out(kernel), KERNEL + "_requantize"),
            relax.Tuple([*conv_args, relax.const(scale), relax.const(np.array([*grid, lowest], "float32"))]),
            relax.TensorType((n, k, h, w), "uint8")))
        if pool is not None:
            codes = self.builder_.emit(relax.Call(pool.op, [codes], pool.attrs))
        n2, c2, h2, w2, rows2, groups2 = (int(v) for v in rowpairs)
        layout = written_out(int8_quantize_rowpairs_x86(n2, c2, h2, w2, rows2, groups2, codes=True))
        new = self.builder_.emit(relax.call_tir(self.builder_.add_func(layout, QUANTIZE + "_layout"),
                                                relax.Tuple([codes, value.args[1].fields[1]]),
                                                relax.TensorType(rowpair_shape(n2, c2, h2, w2, rows2, groups2), "uint8")))
        self.set_var_remap(binding.var, new)
        layer = str(_attr(self.mod_, conv, LAYER_ATTR))
        for decision in self.report:
            if decision.layer == layer and decision.kind == "int8_filter_block":
                decision.reason += f"; {REQUANTIZED}"


def Int8Requantize(report: list | None = None) -> tvm.transform.Pass:
    """Fuse the requantization between consecutive int8 convs into the first one's write-back; the
    ``LayerDecision`` of each such layer in ``report`` says so."""
    sink = report if report is not None else []

    @tvm.transform.module_pass(opt_level=0, name="Int8Requantize")
    def _pass(mod, _ctx):
        return _Requantize(mod, sink).transform()

    return _pass
