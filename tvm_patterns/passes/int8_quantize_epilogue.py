"""The Relax pass that quantizes an int8 conv's float input in the epilogue of the layer producing it.

An int8 conv on x86 reads its input as uint8 row pairs, made from the float activations by one kernel
(``int8_filter_block_kind``): it reads 4 bytes an element. Where the float input comes from a call
that nothing else reads (a float conv and its bias and ReLU: VGG-16's first conv, ResNet-50's 1x1
convs), the quantization becomes elementwise Relax ops after that call,

    x = producer(...)  ->  quantize(x) -> row pairs      becomes
    codes = uint8(clip(floor(producer(...) * (1 / scale) + 0.5) + zero point, 0, 255))  ->  lay out -> row pairs

which FuseOps fuses into the producer's write-back: it writes a byte an element instead of four, and
the layout kernel reads codes instead of floats. The arithmetic is the quantize kernel's, in its order.
(Int8Requantize runs first: an int8 conv feeding another writes the codes itself.)

Only where the float input is larger than MIN_FLOAT_BYTES: smaller ones stay in cache between the two
kernels, and there the extra layout kernel costs more than the bytes saved
(docs/design.md#int8-quantize-epilogue).
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .binding_chains import known_shape, rewrite_functions, single_use_call, tir_attr
from .int8_filter_block_kind import LAYOUT_ATTR
from .int8_requantize import lay_out_codes

ROW_PAIRS = ("rowpair_x86", "rowpair_avx2")   # the layouts whose kernel also lays out codes
MIN_FLOAT_BYTES = 4 << 20                       # twice a core's L2 on the machines measured


def quantized_codes(x: relax.Expr, inv_scale: float, zero_point: float) -> relax.Expr:
    """uint8(clip(floor(x * inv_scale + 0.5) + zero_point, 0, 255)) as elementwise Relax ops (float32)."""
    def f32(v):
        return relax.const(v, "float32")

    y = relax.op.add(relax.op.floor(relax.op.add(relax.op.multiply(x, f32(inv_scale)), f32(0.5))), f32(zero_point))
    return relax.op.astype(relax.op.clip(y, 0.0, 255.0), "uint8")


@mutator
class _QuantizeEpilogue(PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.mod_ = mod
        self.values: dict = {}
        self.uses: dict = {}

    def transform(self) -> tvm.IRModule:
        return rewrite_functions(self, self.mod_)

    def visit_var_binding_(self, binding):
        value = binding.value
        layout = tir_attr(self.mod_, value, LAYOUT_ATTR)
        if layout is None or str(layout[0]) not in ROW_PAIRS:
            return super().visit_var_binding_(binding)
        x, grid = value.args[1].fields
        shape = known_shape(x)
        if (single_use_call(self.values, self.uses, x) is None or not isinstance(grid, tvm.ir.Constant)
                or x.ty.dtype != "float32" or shape is None or 4 * int(np.prod(shape)) <= MIN_FLOAT_BYTES):
            return super().visit_var_binding_(binding)   # a function input, a shared or a cached value: as it was
        inv_scale, zero_point = (float(v) for v in grid.value.numpy())
        codes = self.builder_.emit(quantized_codes(self.visit_expr(x), inv_scale, zero_point))
        self.set_var_remap(binding.var, self.builder_.emit(lay_out_codes(self.builder_, codes, grid, layout)))


def Int8QuantizeEpilogue() -> tvm.transform.Pass:   # noqa: N802  (a pass, named like TVM's)
    """Move the quantization of an int8 conv's float input into the layer producing it (x86 row pairs)."""

    @tvm.transform.module_pass(opt_level=0, name="Int8QuantizeEpilogue")
    def _pass(mod, _ctx):
        return _QuantizeEpilogue(mod).transform()

    return _pass
