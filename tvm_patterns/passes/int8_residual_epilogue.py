"""The Relax pass that moves an int8 1x1 conv's float epilogue into its write-back.

An int8 1x1 conv leaves ``SparseRewrite`` writing int32 sums that a second kernel dequantizes; at the
end of a ResNet block that kernel also adds the bias and the residual and applies the ReLU:

    sums = int8 1x1(x)  ->  dequantize  ->  + bias  ->  + residual  ->  relu  ->  y  ->  quantize -> next 1x1
                                                                                 y  ->  (the next residual)

Here the conv writes y itself (``int8_block_sparse_conv2d_1x1_x86`` with ``residual``): no int32 sums
are written and read back. Where y is quantized at every position for a next int8 1x1 conv, the conv
writes those codes too, and the quantization kernel goes; the same float32 operations in the same order
as the fused float epilogue, so the same y and codes. Where y is also the residual of a later such
conv, that conv reads the codes ((code - zero point) * scale) instead of y, and where nothing else
reads y the conv writes only the codes: a ResNet's residual stream stays 8-bit from block to block,
as the int8 engines keep it (a byte an element where the float sum took four, twice).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from schedules.int8_block_sparse_conv2d_1x1_x86 import int8_block_sparse_conv2d_1x1_x86

from .binding_chains import known_shape, per_channel, rewrite_functions, single_use_call, tir_attr
from .int8_block_kind import CONV_KERNEL, positions_strides
from .int8_filter_block_kind import CONV_ATTR, DEQUANTIZE_ATTR, LAYOUT_ATTR, written_out
from .int8_requantize import epilogue_scale
from .registry import LAYER_ATTR

RESIDUAL = "adds its bias, residual and ReLU in its write-back"
RESIDUAL_CODES = "reads its residual as the codes the int8 layer before it writes"
WITH_CODES = "writes the next int8 layer's codes of the sum"
CODES_ONLY = "and not the float sum (nothing else reads it)"


@dataclass
class _Chain:
    """relu?(residual + (dequantize(conv) + bias)) ending at a binding: the calls, and the vars between."""
    conv: relax.Call
    dequantize: relax.Call
    bias: np.ndarray
    residual: relax.Expr
    relu: bool
    between: tuple          # the vars bound inside the chain (each used once, by the next step)


@mutator
class _ResidualEpilogue(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, report: list):
        super().__init__(mod)
        self.mod_ = mod
        self.report = report
        self.values: dict = {}
        self.uses: dict = {}
        self.chains: dict = {}          # var -> the _Chain ending at its binding
        self.between: set = set()       # the vars inside chains
        self.residual_reads: dict = {}  # var -> how many chains read it as their residual
        self.quantized: dict = {}       # float var -> [(binding var, grid)] of its quantizations at every position
        self.codes: dict = {}           # such a binding var -> the codes a chain writes in its place
        self.stream: dict = {}          # a chain's var -> (its codes, their grid (scale, zero point))

    def transform(self) -> tvm.IRModule:
        return rewrite_functions(self, self.mod_, prepare=_prepare)

    def _chain(self, var, value) -> _Chain | None:
        """The chain ``var = value`` ends: relu(residual + (dequantize(conv) + bias)) or the same without a
        ReLU after it, each step used once, a float32 result; None otherwise."""
        relu, add, between = False, value, ()
        if isinstance(value, relax.Call) and value.op == tvm.ir.Op.get("relax.nn.relu"):
            relu, between = True, (value.args[0],)
            add = single_use_call(self.values, self.uses, value.args[0], tvm.ir.Op.get("relax.add"))
        elif self.uses.get(var, 0) == 1 and any(         # the ReLU after it takes the chain
                isinstance(v, relax.Call) and v.op == tvm.ir.Op.get("relax.nn.relu") and v.args[0].same_as(var)
                for v in self.values.values()):
            return None
        if not (isinstance(add, relax.Call) and add.op == tvm.ir.Op.get("relax.add")) or var.ty.dtype != "float32":
            return None
        for biased, residual in (add.args, add.args[::-1]):
            inner = single_use_call(self.values, self.uses, biased, tvm.ir.Op.get("relax.add"))
            if inner is None:
                continue
            dequantized, bias = inner.args if isinstance(inner.args[1], tvm.ir.Constant) else inner.args[::-1]
            dequantize = single_use_call(self.values, self.uses, dequantized)
            if dequantize is None or tir_attr(self.mod_, dequantize, DEQUANTIZE_ATTR) is None:
                continue
            summed = dequantize.args[1].fields[0]
            conv = single_use_call(self.values, self.uses, summed)
            attr = tir_attr(self.mod_, conv, CONV_ATTR)
            if attr is None or str(attr[0]) != CONV_KERNEL or known_shape(residual) != known_shape(dequantize):
                continue
            bias_k = per_channel(bias, int(attr[5]))          # [kernel, N, C, H, W, K, ...]
            if bias_k is None:
                continue
            return _Chain(conv, dequantize, bias_k, residual, relu, (*between, biased, dequantized, summed))
        return None

    def visit_var_binding_(self, binding):
        var = binding.var
        if var in self.codes:                                  # a quantization a conv before already wrote
            self.set_var_remap(var, self.codes[var])
            return
        if var in self.between:                                # inside a chain: the conv at its end computes it
            return
        chain = self.chains.get(var)
        if chain is None:
            return super().visit_var_binding_(binding)
        _, *geometry = tir_attr(self.mod_, chain.conv, CONV_ATTR)
        n, c, h, w, k, blocks, rows, quads, vnni, *patches = (int(v) for v in geometry)   # patches: a dense conv's
        scale = epilogue_scale(self.mod_, chain.dequantize, chain.bias, blocks * rows)
        quantizations = self.quantized.get(var, [])
        codes = bool(quantizations)
        # the sum in float only where something other than the quantizations and later chains' residuals reads it
        out_float = not codes or self.uses.get(var, 0) - len(quantizations) - self.residual_reads.get(var, 0) > 0
        stream = self.stream.get(chain.residual)               # the residual's codes, written by a chain before
        full, one = (n, k, h, w), (1,)
        kernel = written_out(int8_block_sparse_conv2d_1x1_x86(
            n, c, (h, w), k, blocks, rows, quads, bool(vnni), residual="codes" if stream else "float",
            relu=chain.relu, out_float=out_float, codes=codes, patches=bool(patches and patches[0])))
        residual = (relax.const(np.zeros(one, "float32")), stream[0], relax.const(stream[1])) if stream else \
            (self.visit_expr(chain.residual), relax.const(np.zeros(one, "uint8")), relax.const(np.zeros(2, "float32")))
        grid = quantizations[0][1] if codes else relax.const(np.zeros(2, "float32"))
        call = self.builder_.emit(relax.call_tir(
            self.builder_.add_func(kernel, f"{CONV_KERNEL}_residual"),
            relax.Tuple([*(self.visit_expr(a) for a in chain.conv.args[1].fields), relax.const(scale), *residual, grid]),
            [relax.TensorType(full if out_float else one, "float32"), relax.TensorType(full if codes else one, "uint8")]))
        if out_float:
            self.set_var_remap(var, self.builder_.emit(relax.TupleGetItem(call, 0)))
        if codes:
            written = self.builder_.emit(relax.TupleGetItem(call, 1))
            inv_scale, zero_point = quantizations[0][1].value.numpy()
            self.stream[var] = (written, np.array([1.0 / np.float64(inv_scale), zero_point], "float32"))
            for quantization, _ in quantizations:
                self.codes[quantization] = written
        layer = str(tir_attr(self.mod_, chain.conv, LAYER_ATTR))
        said = "; ".join([RESIDUAL] + ([RESIDUAL_CODES] if stream else []) + ([WITH_CODES] if codes else [])
                         + ([] if out_float else [CODES_ONLY]))
        for decision in self.report:
            if decision.layer == layer and decision.kind == "int8_block":
                decision.reason += f"; {said}"


def _prepare(mutator) -> None:
    """The chains of the function, what they read and hold, and each float var's quantizations at every
    position on one grid (a stride-1 int8 1x1 conv's input)."""
    mutator.quantized, mutator.codes, mutator.stream = {}, {}, {}
    for var, value in mutator.values.items():
        layout = tir_attr(mutator.mod_, value, LAYOUT_ATTR)
        if layout is None or positions_strides(layout) != (1, 1):
            continue
        x, grid = value.args[1].fields
        if isinstance(x, relax.Var) and isinstance(grid, tvm.ir.Constant) and x.ty.dtype == "float32":
            first = mutator.quantized.setdefault(x, [])
            if not first or first[0][1].value.numpy().tobytes() == grid.value.numpy().tobytes():
                first.append((var, grid))
    mutator.chains = {var: chain for var, value in mutator.values.items()
                      if (chain := mutator._chain(var, value)) is not None}
    mutator.between = {v for chain in mutator.chains.values() for v in chain.between}
    mutator.residual_reads = {}
    for chain in mutator.chains.values():
        mutator.residual_reads[chain.residual] = mutator.residual_reads.get(chain.residual, 0) + 1


def Int8ResidualEpilogue(report: list | None = None) -> tvm.transform.Pass:   # noqa: N802  (a pass, named like TVM's)
    """Fuse an int8 1x1 conv's dequantization, bias, residual add and ReLU (and the next int8 1x1 conv's
    quantization of the result) into its write-back; the ``LayerDecision`` of each such layer says so."""
    sink = report if report is not None else []

    @tvm.transform.module_pass(opt_level=0, name="Int8ResidualEpilogue")
    def _pass(mod, _ctx):
        return _ResidualEpilogue(mod, sink).transform()

    return _pass
