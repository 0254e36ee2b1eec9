"""The Relax pass that fuses a block-punched 1x1 conv into the depthwise pattern conv it feeds.

After ``SparseRewrite``, MobileNet-V2's expand and depthwise convs are two kernels with the 1x1 conv's
bias and activation between them as Relax ops. Where the 1x1 conv (stride 1) feeds nothing but

    + bias (a constant a channel)  [ReLU6 (a clip) or ReLU]  -> the depthwise kernel (its input)

the chain becomes one kernel (``computes.expand_depthwise``) that makes the wide tensor a block of
channels at a time where the depthwise conv reads it, instead of writing it out and reading it back
(docs/design.md#expand-depthwise).
"""
from __future__ import annotations

import functools

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from tvm_patterns.computes.block_sparse import CONV_BLOCK
from tvm_patterns.computes.expand_depthwise import expand_depthwise_conv2d
from tvm_patterns.computes.pattern_conv2d import PatternConvGeometry

from .binding_chains import known_shape, per_channel, rewrite_functions, single_use_call, tir_attr
from .registry import LAYER_ATTR

DEPTHWISE_ATTR = "tvm_patterns.depthwise"   # the depthwise kernel's geometry (``geometry_attr``)
KERNEL = "expand_depthwise_conv2d"
FUSED = "fused with the 1x1 conv before it (its output is never written)"
ADD, CLIP, RELU = (tvm.ir.Op.get(f"relax.{op}") for op in ("add", "clip", "nn.relu"))


def geometry_attr(geom: PatternConvGeometry) -> list:
    """What the depthwise kernel's TIR function carries, so that this pass can build it again."""
    return [geom.N, geom.C, geom.H, geom.W, *geom.strides, *geom.padding, geom.vector_width, geom.row_tile]


def geometry_of(attr) -> PatternConvGeometry:
    n, c, h, w, sh, sw, pt, pl, pb, pr, vector_width, row_tile = (int(v) for v in attr)
    return PatternConvGeometry(n, c, h, w, c, (sh, sw), (pt, pl, pb, pr), vector_width=vector_width,
                               row_tile=row_tile)


@mutator
class _Fuse(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, report: list):
        super().__init__(mod)
        self.mod_ = mod
        self.report = report
        self.values: dict = {}
        self.uses: dict = {}

    def transform(self) -> tvm.IRModule:
        return rewrite_functions(self, self.mod_)

    def _single_use(self, expr):
        return single_use_call(self.values, self.uses, expr)

    def _block_conv(self, expr):
        """The block-sparse 1x1 conv call binding ``expr`` (used once), else None."""
        call = self._single_use(expr)
        if call is None or call.op != tvm.ir.Op.get("relax.call_tir") or \
                not call.args[0].name_hint.startswith(CONV_BLOCK) or len(call.args[1].fields) != 3:
            return None
        return call

    def _chain(self, expr):
        """(block conv call, bias constant or None, clip (low, high) or None) of the depthwise kernel's
        input ``expr``: [ReLU6 or ReLU of] [bias +] a block conv, every value used once; or None."""
        var, clip = expr, None
        value = self._single_use(var)
        if value is not None and value.op in (CLIP, RELU):
            clip = (0.0, None) if value.op == RELU else (float(value.args[1].value), float(value.args[2].value))
            var = value.args[0]
            value = self._single_use(var)
        if value is None:
            return None
        if value.op != ADD:       # a 1x1 conv without a bias
            call = self._block_conv(var)
            return None if call is None else (call, None, clip)
        for conv, bias in (value.args, value.args[::-1]):
            call = self._block_conv(conv)
            if call is not None and isinstance(bias, tvm.ir.Constant):
                return call, bias, clip
        return None

    def visit_var_binding_(self, binding):
        attr = tir_attr(self.mod_, binding.value, DEPTHWISE_ATTR)
        chain = None if attr is None else self._chain(binding.value.args[1].fields[0])
        if chain is None:
            return super().visit_var_binding_(binding)
        conv, bias, clip = chain
        geom = geometry_of(attr)
        x, col_idx, values = conv.args[1].fields
        bias_c = np.zeros(geom.C, "float32") if bias is None else per_channel(bias, geom.C)
        n_blocks, _, rows = known_shape(values)
        shape = known_shape(x)
        if (bias_c is None or n_blocks * rows != geom.C or shape is None
                or (shape[0], *shape[2:]) != (geom.N, geom.H, geom.W)):
            return super().visit_var_binding_(binding)   # a 1x1 conv of stride 2, or a partial last block
        _, offset, value = binding.value.args[1].fields
        flat = self.builder_.emit(relax.op.reshape(self.visit_expr(x), (geom.N, shape[1], geom.H * geom.W)))
        fused = self.builder_.emit(self.builder_.call_te(
            functools.partial(expand_depthwise_conv2d, geom=geom, clip=clip), flat, col_idx, values,
            relax.const(bias_c), offset, value, primfunc_name_hint=KERNEL, primfunc_attrs={"op_pattern": 4}))
        self.set_var_remap(binding.var, fused)
        layer = str(tir_attr(self.mod_, binding.value, LAYER_ATTR))
        for decision in self.report:
            if decision.layer == layer and decision.kind == "pattern":
                decision.reason += f"; {FUSED}"


def ExpandDepthwiseFusion(report: list | None = None) -> tvm.transform.Pass:
    """Fuse each block-sparse 1x1 conv (with its bias and ReLU6 or ReLU) into the depthwise pattern conv
    that is its only consumer; the ``LayerDecision`` of each such depthwise layer in ``report`` says so."""
    sink = report if report is not None else []

    @tvm.transform.module_pass(opt_level=0, name="ExpandDepthwiseFusion")
    def _pass(mod, _ctx):
        return _Fuse(mod, sink).transform()

    return _pass
