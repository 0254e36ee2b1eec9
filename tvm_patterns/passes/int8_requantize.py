"""The Relax pass that keeps activations 8-bit between int8 convs.

Each int8 conv leaves ``SparseRewrite`` between a quantization of its float input and a
dequantization of its int32 sums (``int8_filter_block_kind``, ``int8_block_kind``'s 1x1 convs). Where one
int8 conv feeds the next through nothing but its bias, a ReLU and a max pool,

    sums = int8 conv(x)  ->  dequantize  ->  + bias  ->  relu  ->  max pool  ->  quantize -> x'

the first conv requantizes its sums onto the second's input grid in its write-back and the chain becomes

    codes = int8 conv(x) (uint8)  ->  max pool (uint8)  ->  lay out -> x'

(x86 3x3: row pairs, or stride-2 records; NEON 3x3: row triples; 1x1: the codes as they are, or every
other one at stride 2; a dense conv: its patches).

The codes are those the float chain gives: the same float32 operations in the same order, a ReLU as
the lowest code (the zero point), and a max pool commutes with the grid's monotone rounding. The
conv writes a byte per output instead of four, and no float activation is written or read.
"""
from __future__ import annotations

import functools

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from schedules import int8_filter_block_pattern_conv2d_rowpair_avx2 as int8_avx2
from schedules import int8_filter_block_pattern_conv2d_rowpair_x86 as int8_x86
from schedules import int8_filter_block_pattern_conv2d_rowtriple_neon as int8_neon
from schedules.int8_block_sparse_conv2d_1x1_x86 import int8_block_sparse_conv2d_1x1_x86
from schedules.int8_quantize_im2col_x86 import int8_quantize_im2col_x86
from schedules.max_pool2d_uint8_nchw_x86 import max_pool2d_uint8_nchw_x86
from schedules.int8_quantize_rowpairs_x86 import int8_quantize_rowpairs_x86
from tvm_patterns.computes.int8_quantization import (QUANTIZE_BLOCK, QUANTIZE_ROWTRIPLES, quantize_positions,
                                                     quantize_rowtriples)
from tvm_patterns.sparsity.int8_filter_block import rowtriple_shape

from .binding_chains import known_shape, per_channel, rewrite_functions, tir_attr
from .int8_block_kind import CONV_KERNEL as CONV1X1_KERNEL
from .int8_block_kind import positions_strides
from .int8_dense_conv_kind import IM2COL, im2col_of
from .int8_filter_block_kind import (AVX2_KERNEL, CONV_ATTR, DEQUANTIZE_ATTR, KERNEL, LAYOUT_ATTR, NEON_KERNEL,
                                     QUANTIZE, written_out, written_tensor)
from .registry import LAYER_ATTR

MAX_POOL_UINT8 = "max_pool2d_uint8_nchw_x86"
REQUANTIZED = "writes uint8 codes on the next int8 layer's input grid"
READS_CODES = "reads the uint8 codes the int8 layer before it writes"
KERNELS = {KERNEL: (int8_x86.Knobs, int8_x86.int8_filter_block_pattern_conv2d_rowpair_x86),
           AVX2_KERNEL: (int8_avx2.Knobs, int8_avx2.int8_filter_block_pattern_conv2d_rowpair_avx2),
           NEON_KERNEL: (int8_neon.Knobs, int8_neon.int8_filter_block_pattern_conv2d_rowtriple_neon)}


@mutator
class _Requantize(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, report: list):
        super().__init__(mod)
        self.mod_ = mod
        self.report = report
        self.values: dict = {}
        self.uses: dict = {}
        self.codes: dict = {}       # (float input, grid) -> its uint8 codes at every position, [N, C, H, W]

    def transform(self) -> tvm.IRModule:
        return rewrite_functions(self, self.mod_)

    def _quantized_alike(self, var, grid) -> int:
        """How many quantizations read ``var``, if every use of it is one on ``grid`` (a conv's output read by
        two int8 1x1 convs, ResNet's first block and its shortcut: both take the same codes); else 0."""
        key = grid.value.numpy().tobytes()
        readers = [value for value in self.values.values()
                   if isinstance(value, relax.Call) and any(a.same_as(var) for a in _arguments(value))]
        alike = [value for value in readers if tir_attr(self.mod_, value, LAYOUT_ATTR) is not None
                 and value.args[1].fields[0].same_as(var) and isinstance(value.args[1].fields[1], tvm.ir.Constant)
                 and value.args[1].fields[1].value.numpy().tobytes() == key]
        return len(alike) if len(alike) == len(readers) == self.uses.get(var, 0) else 0

    def _producer(self, var, uses: int = 1):
        """The call that binds ``var`` if ``var`` is used exactly ``uses`` times (once, by default); through a
        field of a tuple too (the importer's max pool with indices: a tuple of the pool and unused indices)."""
        value = self.values.get(var)
        if isinstance(value, relax.TupleGetItem) and self.uses.get(var, 0) == uses:
            fields = self.values.get(value.tuple_value)
            if isinstance(fields, relax.Tuple) and self.uses.get(value.tuple_value, 0) == 1:
                var, uses = fields.fields[value.index], 1
                value = self.values.get(var)
        if not isinstance(value, relax.Call) or self.uses.get(var, 0) != uses:
            return None
        return value

    def _chain(self, quantize: relax.Call):
        """(pool call or None, relu?, bias or None, dequantize call, conv call) feeding ``quantize`` (and
        any other quantization of its input on the same grid)."""
        x, pool, relu, bias = quantize.args[1].fields[0], None, False, None
        if not isinstance(quantize.args[1].fields[1], tvm.ir.Constant):
            return None
        call = self._producer(x, max(1, self._quantized_alike(x, quantize.args[1].fields[1])))
        if call is not None and call.op == tvm.ir.Op.get("relax.nn.max_pool2d"):
            pool, call = call, self._producer(call.args[0])
        if call is not None and call.op == tvm.ir.Op.get("relax.nn.relu"):
            relu, call = True, self._producer(call.args[0])
        if call is not None and call.op == tvm.ir.Op.get("relax.add"):
            a, b = call.args
            if isinstance(a, tvm.ir.Constant):
                a, b = b, a
            bias, call = b, self._producer(a)
        if call is None or tir_attr(self.mod_, call, DEQUANTIZE_ATTR) is None:
            return None
        conv = self._producer(call.args[1].fields[0])
        if conv is None or tir_attr(self.mod_, conv, CONV_ATTR) is None:
            return None
        return pool, relu, bias, call, conv

    def _share_positions(self, binding, layout):
        """The quantization of a 1x1 conv's float input, kept for another 1x1 conv that quantizes the same
        input on the same grid (ResNet's downsample beside the first 1x1 of its block) to pick its codes from
        (``_codes_of``)."""
        x, grid = binding.value.args[1].fields
        key = (x, grid.value.numpy().tobytes())
        var = self.builder_.emit(self.visit_expr(binding.value))
        self.set_var_remap(binding.var, var)
        if positions_strides(layout) == (1, 1):
            self.codes[key] = var

    def _codes_of(self, quantize: relax.Call):
        """The codes [N, C, H, W] of this quantization's input on its grid that a quantization or a conv before
        already wrote, or None."""
        x, grid = quantize.args[1].fields
        return self.codes.get((x, grid.value.numpy().tobytes())) if isinstance(grid, tvm.ir.Constant) else None

    def _annotate(self, producer, consumer) -> None:
        """Say in the report which int8 layer writes codes and which reads them."""
        for decision in self.report:
            if decision.kind in ("int8_filter_block", "int8_block", "int8_dense_conv"):
                if producer is not None and decision.layer == str(producer):
                    decision.reason += f"; {REQUANTIZED}"
                if consumer is not None and decision.layer == str(consumer):
                    decision.reason += f"; {READS_CODES}"

    def visit_var_binding_(self, binding):
        value = binding.value
        layout = tir_attr(self.mod_, value, LAYOUT_ATTR)
        if layout is not None and self._codes_of(value) is not None:     # a conv before wrote these codes already
            self.set_var_remap(binding.var, self.builder_.emit(
                lay_out_codes(self.builder_, self._codes_of(value), value.args[1].fields[1], layout)))
            self._annotate(None, tir_attr(self.mod_, value, LAYER_ATTR))
            return
        chain = self._chain(value) if layout is not None else None
        if chain is None and layout is not None and positions_strides(layout) is not None:
            return self._share_positions(binding, layout)
        if chain is None:
            return super().visit_var_binding_(binding)
        pool, relu, bias, dequantize, conv = chain
        name, *geometry = tir_attr(self.mod_, conv, CONV_ATTR)
        k, rows = int(geometry[4]), int(geometry[5]) * int(geometry[6])    # [N, C, H, W, K, blocks, rows a block, ...]
        bias_k = np.zeros(k, "float32") if bias is None else per_channel(bias, k)
        if bias_k is None:
            return super().visit_var_binding_(binding)
        scale = epilogue_scale(self.mod_, dequantize, bias_k, rows)
        grid = value.args[1].fields[1]                               # (1 / scale, zero point) of the next layer
        zero_point = grid.value.numpy()[1]
        lowest = zero_point if relu else np.float32(0.0)
        kernel = _requantizing_kernel(str(name), geometry)
        conv_args = [self.visit_expr(a) for a in conv.args[1].fields]
        codes = self.builder_.emit(relax.call_tir(
            self.builder_.add_func(written_out(kernel), f"{name}_requantize"),
            relax.Tuple([*conv_args, relax.const(scale), relax.const(np.array([*grid.value.numpy(), lowest], "float32"))]),
            relax.TensorType(known_shape(conv), "uint8")))
        if pool is not None:
            codes = self.builder_.emit(pooled_codes(self.builder_, codes, pool))
        x, grid = value.args[1].fields
        self.codes[(x, grid.value.numpy().tobytes())] = codes
        self.set_var_remap(binding.var, self.builder_.emit(lay_out_codes(self.builder_, codes, grid, layout)))
        self._annotate(tir_attr(self.mod_, conv, LAYER_ATTR), tir_attr(self.mod_, value, LAYER_ATTR))


def pooled_codes(bb: relax.BlockBuilder, codes: relax.Expr, pool: relax.Call) -> relax.Expr:
    """The max pool ``pool`` of uint8 codes: with padding (NCHW, floor mode, no dilation) our byte kernel, where
    Relax's is not vectorized; without, Relax's (on VGG-16 ours made the next convs slower,
    docs/design.md#int8-dense-conv)."""
    a = pool.attrs
    shape = known_shape(codes)
    if (str(a.layout), str(a.out_layout), bool(a.ceil_mode), [int(d) for d in a.dilation]) != ("NCHW", "NCHW", False, [1, 1]) \
            or shape is None or len(a.padding) != 4 or not any(int(p) for p in a.padding) \
            or any(int(s) not in (1, 2) for s in a.strides):
        return relax.Call(pool.op, [codes], pool.attrs)
    args = [tuple(int(v) for v in a.pool_size), tuple(int(v) for v in a.strides), tuple(int(v) for v in a.padding)]
    func = written_out(max_pool2d_uint8_nchw_x86(*shape, *args))
    return relax.call_tir(bb.add_func(func, MAX_POOL_UINT8), relax.Tuple([codes]), written_tensor(func))


def _arguments(call: relax.Call) -> list:
    """A call's arguments, those of a call_tir's argument tuple included."""
    args = list(call.args)
    for a in call.args:
        if isinstance(a, relax.Tuple):
            args.extend(a.fields)
    return args


def epilogue_scale(mod: tvm.IRModule, dequantize: relax.Call, bias: np.ndarray, rows: int) -> np.ndarray:
    """float32 [rows, 2] of an int8 conv's write-back: (the float scale of its sums, its float bias) for each
    of its K output channels (``bias``: [K]), the ``dequantize`` call's, then zeros up to ``rows``."""
    scale = np.zeros((rows, 2), "float32")
    weight_scale = dequantize.args[1].fields[1].value.numpy()
    scale[:len(bias), 0] = weight_scale * np.float32(float(tir_attr(mod, dequantize, DEQUANTIZE_ATTR)))
    scale[:len(bias), 1] = bias
    return scale


def _requantizing_kernel(name: str, geometry):
    """The int8 conv ``name`` of ``geometry`` (its CONV_ATTR) writing uint8 codes."""
    if name == CONV1X1_KERNEL:
        n, c, h, w, k, blocks, rows, quads, vnni, *patches = (int(v) for v in geometry)   # patches: a dense conv's
        return int8_block_sparse_conv2d_1x1_x86(n, c, (h, w), k, blocks, rows, quads, bool(vnni), requantize=True,
                                                patches=bool(patches and patches[0]))
    n, c, h, w, k, blocks, filters, max_len, patterns, *knobs = (int(v) for v in geometry)
    knobs_type, make = KERNELS[name]
    return make(n, c, h, w, k, blocks, filters, max_len, patterns, knobs_type(*knobs), requantize=True)


def lay_out_codes(bb: relax.BlockBuilder, codes: relax.Expr, grid: relax.Expr, layout) -> relax.Expr:
    """The call that lays uint8 codes [N, C, H, W] out as the next int8 conv reads them (``layout``: its
    attribute)."""
    name, n, c, h, w, *rest = layout
    n, c, h, w = (int(v) for v in (n, c, h, w))
    patches = im2col_of(layout)
    if patches is not None:
        func = written_out(int8_quantize_im2col_x86(**patches, codes=True))
        return relax.call_tir(bb.add_func(func, IM2COL + "_layout"), relax.Tuple([codes, grid]), written_tensor(func))
    strides = positions_strides(layout)
    if strides is not None:
        if strides == (1, 1):
            return codes
        return bb.call_te(functools.partial(quantize_positions, strides=strides), codes, grid,
                          primfunc_name_hint=QUANTIZE_BLOCK + "_layout")
    rows, groups = int(rest[0]), int(rest[1])
    if str(name) in ("rowpair_x86", "rowpair_avx2"):
        avx2 = str(name) == "rowpair_avx2"
        stride = 1 if avx2 else int(rest[3])       # [rows, groups, blocks inner, stride] of the VNNI kernel
        func = written_out(int8_quantize_rowpairs_x86(n, c, h, w, rows, groups, codes=True, avx2=avx2, stride=stride))
        return relax.call_tir(bb.add_func(func, QUANTIZE + "_layout"), relax.Tuple([codes, grid]),
                              written_tensor(func))
    return bb.call_te(functools.partial(quantize_rowtriples, shape=rowtriple_shape(n, c, h, w, rows, groups)),
                      codes, grid, primfunc_name_hint=QUANTIZE_ROWTRIPLES + "_layout")


def Int8Requantize(report: list | None = None) -> tvm.transform.Pass:
    """Fuse the requantization between consecutive int8 convs into the first one's write-back; the
    ``LayerDecision`` of each such layer in ``report`` says so."""
    sink = report if report is not None else []

    @tvm.transform.module_pass(opt_level=0, name="Int8Requantize")
    def _pass(mod, _ctx):
        return _Requantize(mod, sink).transform()

    return _pass


def unchained_1x1(report: list) -> set:
    """The int8 1x1 convs in ``report`` chained to no int8 layer, before or after."""
    return {d.layer for d in report if d.kind == "int8_block" and d.op == "relax.nn.conv2d"
            and REQUANTIZED not in d.reason and READS_CODES not in d.reason}
