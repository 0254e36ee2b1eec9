"""PatternConvRewrite: which convs it rewrites, which it leaves dense and why, and what it emits."""
import functools

import numpy as np
import pytest
import torch
import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu

import tvm_patterns as tp
from tvm_patterns.computes.pattern_conv2d import MAIN_BLOCK, PatternConvGeometry, pattern_conv2d
from tvm_patterns.sparsity import PatternLibrary, kernel_tables, pack, project_pattern_connectivity

LIB = PatternLibrary.patdnn()


def pruned_conv(cin=8, cout=8, connectivity=3.6, **kw):
    conv = torch.nn.Conv2d(cin, cout, kw.pop("k", 3), padding=kw.pop("padding", 1), **kw)
    if conv.kernel_size == (3, 3) and conv.groups == 1:
        w = project_pattern_connectivity(conv.weight.detach().numpy(), LIB, connectivity)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(w))
    return conv


def decisions(model, x, **pass_kw):
    report = []
    mod = tp.from_pytorch(model, x)
    with tp.targets.host():
        tp.PatternConvRewrite(report=report, **pass_kw)(relax.transform.FoldConstant()(mod))
    return report


def with_nan(conv):
    with torch.no_grad():
        conv.weight[0, 0, 1, 1] = float("nan")
    return conv


LEFT_DENSE = {  # name: (model, input, pass options, expected reason)
    "dense 3x3 weight": (torch.nn.Conv2d(4, 4, 3, padding=1), (1, 4, 8, 8), {}, "fit no library pattern"),
    "1x1 conv": (pruned_conv(k=1, padding=0), (1, 8, 8, 8), {}, "not 3x3"),
    "dilated conv": (pruned_conv(dilation=2, padding=2), (1, 8, 8, 8), {}, "dilation=[2, 2]"),
    "stride 3": (pruned_conv(stride=3), (1, 8, 9, 9), {}, "strides=[3, 3]"),
    "NaN weight": (with_nan(pruned_conv()), (1, 8, 8, 8), {}, "NaN"),
    "too dense to pay": (pruned_conv(connectivity=1.0), (1, 8, 8, 8), {"max_density": 0.3}, "MAC density 0.44 is above 0.30"),
}


@pytest.mark.parametrize("case", LEFT_DENSE)
def test_layers_left_dense_are_reported_with_the_reason(case):
    model, shape, opts, reason = LEFT_DENSE[case]
    report = decisions(model, torch.randn(*shape), **opts)
    assert len(report) == 1 and not report[0].rewritten
    assert reason in report[0].reason


def test_non_constant_weight_is_left_dense():
    x = relax.Var("x", relax.TensorType([1, 4, 8, 8], "float32"))
    w = relax.Var("w", relax.TensorType([4, 4, 3, 3], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x, w]):
        bb.emit_func_output(bb.emit(relax.op.nn.conv2d(x, w, padding=1)))
    report = []
    tp.PatternConvRewrite(report=report)(bb.get())
    assert "not a compile-time constant" in report[0].reason


def test_conv_whose_padded_input_needs_64_bit_indices_is_left_dense():
    w = project_pattern_connectivity(np.random.randn(4, 4, 3, 3).astype("float32"), LIB, 2.0)
    x = relax.Var("x", relax.TensorType([2, 4, 16384, 16384], "float32"))   # 2 * 4 * 16386^2 > 2^31
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        bb.emit_func_output(bb.emit(relax.op.nn.conv2d(x, relax.const(w), padding=1)))
    report = []
    with tp.targets.host():
        tp.PatternConvRewrite(report=report)(bb.get())
    assert not report[0].rewritten and "needs 64-bit indices" in report[0].reason


def test_rewritten_layers_are_named_by_their_torch_modules():
    model = torch.nn.Sequential(pruned_conv(3, 8, connectivity=1.0), torch.nn.ReLU(),
                                torch.nn.Sequential(pruned_conv(8, 8), torch.nn.BatchNorm2d(8).eval()))
    report = decisions(model, torch.randn(1, 3, 8, 8))
    assert [(r.layer, r.rewritten) for r in report] == [("0", True), ("2.0", True)]
    assert "18/64 kernels, 8.0x fewer MACs" in report[1].reason


def test_rewrite_emits_call_tir_to_the_pattern_compute_with_packed_constants():
    w = project_pattern_connectivity(np.random.default_rng(0).standard_normal((8, 4, 3, 3)).astype("float32"), LIB, 2.0)
    x = relax.Var("x", relax.TensorType([1, 4, 10, 10], "float32"))

    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(w), strides=2, padding=1))
            gv = bb.emit_output(y)
        bb.emit_func_output(gv)
    before = bb.get()

    after = tp.PatternConvRewrite()(before)

    geom = PatternConvGeometry(1, 4, 10, 10, 8, (2, 2), (1, 1, 1, 1))
    t = kernel_tables(pack(w, LIB), geom.plane, geom.row, geom.columns)
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.call_te(functools.partial(pattern_conv2d, geom=geom), x, relax.const(t.length),
                           relax.const(t.offset), relax.const(t.value), primfunc_name_hint=MAIN_BLOCK,
                           primfunc_attrs={"op_pattern": 4})
            gv = bb.emit_output(y)
        bb.emit_func_output(gv)
    expected = bb.get()

    tvm.ir.assert_structural_equal(after[MAIN_BLOCK], expected[MAIN_BLOCK])
    call = after["main"].body.blocks[0].bindings[0].value
    assert call.op.name == "relax.call_tir" and call.args[0].name_hint == MAIN_BLOCK
    x_arg, *consts = call.args[1].fields
    assert x_arg.same_as(after["main"].params[0])
    for got, want in zip(consts, (t.length, t.offset, t.value)):
        assert np.array_equal(got.value.numpy(), want)
    assert not any(isinstance(b.value, relax.Call) and b.value.op.name == "relax.nn.conv2d"
                   for b in after["main"].body.blocks[0].bindings)


def test_bias_and_relu_fuse_into_the_pattern_kernel():
    model = torch.nn.Sequential(pruned_conv(8, 8), torch.nn.ReLU())
    mod = tp.from_pytorch(model, torch.randn(1, 8, 8, 8))
    target = tp.targets.host()
    with target:
        mod = tvm.transform.Sequential([relax.transform.FoldConstant(), tp.PatternConvRewrite()]
                                       + cpu.legalize_passes(target))(mod)
    names = [gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    (name,) = names  # one kernel: conv (either implementation), bias and ReLU together
    assert name.startswith("fused_pattern_conv2d") and name.endswith("_add_relu")


def test_a_model_pruned_with_its_own_library_is_rewritten_without_being_told_the_library():
    """README's path: oneshot_prune fits a library to the weights; build finds it in them."""
    from tvm_patterns.compress import oneshot_prune

    from ..layer_check import assert_matches_torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(16, 24, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(24, 8, 3, stride=2, padding=1)).eval()
    pruner = oneshot_prune(model, [{"module": m, "kind": "pattern", "patterns": 6, "connectivity": 2.0}
                                   for m in ("2", "4")])
    pruner.squash()
    patdnn = {m.tobytes() for m in LIB.masks}
    assert not any(m.tobytes() in patdnn for m in pruner.pattern_library.masks)   # fitted, none of PatDNN's
    report = []
    assert_matches_torch(model, torch.randn(2, 3, 13, 11), report=report)
    assert [(r.layer, r.rewritten) for r in report] == [("0", False), ("2", True), ("4", True)]
