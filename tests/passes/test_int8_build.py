"""Static int8 through ``tp.build(mod, int8=tp.calibrate(model, batches))``: filter-block pattern convs
with a calibrated input range run in int8 (AVX-512 VNNI, or AVX2 where the CPU has no VNNI), the rest as
before, each with its reason."""
import importlib
import subprocess

import numpy as np
import pytest
import torch
import tvm
from torch import nn
from tvm import relax

import tvm_patterns as tp
from tvm_patterns.passes.int8_requantize import READS_CODES, REQUANTIZED
from tvm_patterns.passes.int8_residual_epilogue import CODES_ONLY, RESIDUAL, RESIDUAL_CODES, WITH_CODES
from tvm_patterns.sparsity.quantization import input_grid
from tvm_patterns.compress import oneshot_prune
from tvm_patterns.sparsity import PatternLibrary

from ..schedules.test_int8_filter_block_conv import VNNI, require_vnni
from ..schedules.test_int8_filter_block_conv_avx2 import AVX2, require_avx2


def user_model(seed=0, quantize=None) -> nn.Module:
    """A user's own layout: a dense stem, a conv with BatchNorm, a pool, a strided conv, a head."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(32, 24, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(24, 16, 3, stride=2, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    model[3].running_mean.normal_()
    model[3].running_var.uniform_(0.5, 2)
    config = [{"module": m, "kind": "filter_block_pattern", "filters": 4, "connectivity": 2.0}
              | ({"quantize": quantize} if quantize else {}) for m in ("2", "6", "8")]
    oneshot_prune(model, config, PatternLibrary.patdnn()).squash()
    return model


@pytest.fixture(scope="module")
def int8_build():
    require_vnni()
    model = user_model()
    batches = [torch.randn(4, 3, 20, 30) for _ in range(4)]
    ranges = tp.calibrate(model, batches)
    report = []
    ex = tp.build(tp.from_pytorch(model, batches[0]), int8=ranges, report=report)
    return model, ex, report


def test_the_calibrated_filter_block_convs_run_in_int8_and_the_others_say_why_not(int8_build):
    _, _, report = int8_build
    kinds = {r.layer: (r.kind, r.reason) for r in report}
    assert kinds["2"][0] == kinds["6"][0] == kinds["8"][0] == "int8_filter_block"   # "8" at stride 2
    assert "zero point 0" in kinds["2"][1]                          # after a ReLU: a grid of nonnegatives
    stem = next(r for r in report if r.layer == "0")                # the dense stem: too few MACs to pay in int8
    assert stem.kind is None and "int8_dense_conv: 23 MACs per float element" in stem.reason


def test_the_int8_network_agrees_with_float_pytorch(int8_build):
    model, ex, _ = int8_build
    vm = relax.VirtualMachine(ex, tvm.cpu())
    x = torch.randn(4, 3, 20, 30, generator=torch.Generator().manual_seed(9))   # not a calibration batch
    with torch.no_grad():
        ref = model(x).numpy()
    agree, worst = 0, 0.0
    for i in range(0, 64, 4):
        xi = torch.randn(4, 3, 20, 30, generator=torch.Generator().manual_seed(100 + i))
        with torch.no_grad():
            ref = model(xi).numpy()
        got = vm["main"](tvm.runtime.tensor(xi.numpy())).numpy()
        agree += int((got.argmax(1) == ref.argmax(1)).sum())
        worst = max(worst, float(np.abs(got - ref).max() / np.abs(ref).max()))
    assert worst < 0.03, worst                                       # 8-bit grids: about 1% of the range
    assert agree >= 63, agree                                        # top-1 of 64 random inputs


def test_the_int8_build_multiplies_with_vpdpbusd(int8_build):
    _, ex, _ = int8_build
    asm = "".join(m.inspect_source("asm") for m in ex.mod.imports if m.kind == "llvm")
    assert asm.count("vpdpbusd") > 0


@pytest.mark.parametrize("family", ["vnni", "avx2"])
def test_an_int8_conv_feeding_another_writes_the_next_layers_codes_as_the_float_chain_would(monkeypatch, family):
    target = None if family == "vnni" else AVX2
    (require_vnni if family == "vnni" else require_avx2)()
    model = user_model()
    batches = [torch.randn(2, 3, 20, 30, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    mod, ranges = tp.from_pytorch(model, batches[0]), tp.calibrate(model, batches)
    report = []
    fused = tp.build(mod, target, int8=ranges, report=report)
    reasons = {r.layer: r.reason for r in report}
    assert REQUANTIZED in reasons["2"]          # conv -> BatchNorm -> ReLU -> max pool -> int8 conv "6"
    # its consumer, the stride-2 conv, runs in int8 on VNNI (reading stride-2 records); on AVX2 in float
    assert (REQUANTIZED in reasons["6"]) == (family == "vnni")
    if family == "avx2":
        stride2 = next(r for r in report if r.layer == "8")
        assert stride2.kind == "filter_block" and "the int8 kernel runs padding 1, stride 1 " in stride2.passed_over
    assert f"rowpair_{'x86' if family == 'vnni' else 'avx2'}_requantize" in "".join(
        m.inspect_source("asm") for m in fused.mod.imports if m.kind == "llvm")
    monkeypatch.setattr(importlib.import_module("tvm_patterns.passes.pipeline"), "Int8Requantize",
                        lambda report=None: tvm.transform.Sequential([]))
    float_between = tp.build(mod, target, int8=ranges)
    x = tvm.runtime.tensor(torch.randn(2, 3, 20, 30, generator=torch.Generator().manual_seed(7)).numpy())
    got, expected = (relax.VirtualMachine(ex, tvm.cpu())["main"](x).numpy() for ex in (fused, float_between))
    np.testing.assert_array_equal(got, expected)


def test_every_int8_conv_of_vgg16_but_the_last_writes_the_next_layers_codes():
    from tvm_patterns.apps.models import pruned_network   # the importer's max pools: a tuple of the pool and its indices
    model, x, mod = pruned_network("vgg16", 32, filter_block=4)
    report = []
    tp.build(mod, VNNI, int8=tp.calibrate(model, [x]), report=report)
    convs = [r for r in report if r.kind == "int8_filter_block"]
    assert len(convs) == 12 and [REQUANTIZED in r.reason for r in convs] == [True] * 11 + [False]


def test_the_int8_network_for_aarch64_runs_sdot_and_agrees_with_float_pytorch_on_the_emulated_device(
        arm_device, tmp_path, monkeypatch):
    model = user_model()
    batches = [torch.randn(4, 3, 20, 30, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    report = []
    target = tp.targets.arm_cpu()
    ex = tp.build(tp.from_pytorch(model, batches[0]), target, int8=tp.calibrate(model, batches), report=report)
    kinds = {r.layer: r for r in report}
    assert kinds["2"].kind == kinds["6"].kind == "int8_filter_block" and REQUANTIZED in kinds["2"].reason
    assert kinds["12"].kind is None and "no int8 kernel for llvm cortex-a76" in kinds["12"].reason
    path = tp.export_library(ex, tmp_path / "int8.so", target)
    dis = subprocess.run(["aarch64-linux-gnu-objdump", "-d", "--no-show-raw-insn", str(path)], capture_output=True,
                         text=True, check=True).stdout
    assert "sdot\t" in dis and "\ttbl\t" in dis
    agree, worst = 0, 0.0
    for i in range(4):
        x = torch.randn(4, 3, 20, 30, generator=torch.Generator().manual_seed(50 + i))
        with torch.no_grad():
            ref = model(x).numpy()
        got = arm_device.run_model(path, x.numpy())
        agree += int((got.argmax(1) == ref.argmax(1)).sum())
        worst = max(worst, float(np.abs(got - ref).max() / np.abs(ref).max()))
    assert worst < 0.03 and agree >= 15, (worst, agree)
    # the codes written in the conv's write-back are those the float chain between the layers gives
    monkeypatch.setattr(importlib.import_module("tvm_patterns.passes.pipeline"), "Int8Requantize",
                        lambda report=None: tvm.transform.Sequential([]))
    float_between = tp.export_library(tp.build(tp.from_pytorch(model, batches[0]), target,
                                               int8=tp.calibrate(model, batches)), tmp_path / "float.so", target)
    np.testing.assert_array_equal(arm_device.run_model(path, x.numpy()), arm_device.run_model(float_between, x.numpy()))


def test_the_int8_network_for_an_aarch64_cpu_without_dot_product_runs_smull_on_a_cortex_a72(
        arm_device_without_dotprod, tmp_path):
    """A Raspberry Pi 4 / RK3399 target (Cortex-A72): the same int8 layers, chained in 8 bits, with smull +
    sadalp, run on an emulated Cortex-A72 (where sdot would be an illegal instruction)."""
    model = user_model()
    batches = [torch.randn(4, 3, 20, 30, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    report = []
    target = tp.targets.arm_cpu("rk3399")
    ex = tp.build(tp.from_pytorch(model, batches[0]), target, int8=tp.calibrate(model, batches), report=report)
    kinds = {r.layer: r for r in report}
    assert kinds["2"].kind == kinds["6"].kind == "int8_filter_block" and REQUANTIZED in kinds["2"].reason
    path = tp.export_library(ex, tmp_path / "int8.so", target)
    dis = subprocess.run(["aarch64-linux-gnu-objdump", "-d", "--no-show-raw-insn", str(path)], capture_output=True,
                         text=True, check=True).stdout
    assert "smull\t" in dis and "sadalp\t" in dis and "sdot\t" not in dis
    agree, worst = 0, 0.0
    for i in range(4):
        x = torch.randn(4, 3, 20, 30, generator=torch.Generator().manual_seed(50 + i))
        with torch.no_grad():
            ref = model(x).numpy()
        got = arm_device_without_dotprod.run_model(path, x.numpy())
        agree += int((got.argmax(1) == ref.argmax(1)).sum())
        worst = max(worst, float(np.abs(got - ref).max() / np.abs(ref).max()))
    assert worst < 0.03 and agree >= 15, (worst, agree)


def test_an_x86_cpu_with_avx2_only_runs_the_avx2_int8_kernel_on_7bit_weights_and_agrees_with_float_pytorch():
    require_avx2()
    model = user_model()
    batches = [torch.randn(4, 3, 20, 30, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    report = []
    ex = tp.build(tp.from_pytorch(model, batches[0]), AVX2, int8=tp.calibrate(model, batches), report=report)
    kinds = {r.layer: r for r in report}
    assert kinds["2"].kind == kinds["6"].kind == "int8_filter_block"
    assert "weights on the uniform 7-bit grid" in kinds["2"].reason and REQUANTIZED in kinds["2"].reason
    asm = "".join(m.inspect_source("asm") for m in ex.mod.imports if m.kind == "llvm")
    assert "vpmaddubsw" in asm and "vpdpbusd" not in asm and "zmm" not in asm
    vm = relax.VirtualMachine(ex, tvm.cpu())
    agree, worst = 0, 0.0
    for i in range(0, 64, 4):
        x = torch.randn(4, 3, 20, 30, generator=torch.Generator().manual_seed(100 + i))
        with torch.no_grad():
            ref = model(x).numpy()
        got = vm["main"](tvm.runtime.tensor(x.numpy())).numpy()
        agree += int((got.argmax(1) == ref.argmax(1)).sum())
        worst = max(worst, float(np.abs(got - ref).max() / np.abs(ref).max()))
    assert worst < 0.03 and agree >= 63, (worst, agree)


@pytest.mark.parametrize("scheme,kept", [("pow2", True), ("uniform", False)])
def test_on_avx2_a_grid_with_codes_up_to_64_keeps_its_values_and_a_wider_one_goes_on_7_bits(scheme, kept):
    model = user_model(quantize={"scheme": scheme, "bits": 8 if scheme == "uniform" else 4})
    report = []
    tp.build(tp.from_pytorch(model, torch.randn(1, 3, 20, 30)), AVX2,
             int8=tp.calibrate(model, [torch.randn(1, 3, 20, 30)]), report=report)
    reason = next(r.reason for r in report if r.layer == "6")
    assert ("exact on a pow2 grid" in reason) if kept else ("uniform 7-bit grid" in reason)


def test_an_x86_cpu_without_avx2_keeps_the_float_kernel_and_says_so():
    model = user_model()
    ranges = tp.calibrate(model, [torch.randn(1, 3, 20, 30)])
    report = []
    tp.build(tp.from_pytorch(model, torch.randn(1, 3, 20, 30)), {"kind": "llvm", "mcpu": "sandybridge"},
             int8=ranges, report=report)
    layer = next(r for r in report if r.layer == "2")
    assert layer.kind == "filter_block" and "lacks avx2" in layer.passed_over


@pytest.mark.parametrize("scheme,found", [("sp2", "sp2"), ("pow2", "pow2"), ("uniform", "uniform")])
def test_weights_quantized_in_compression_keep_their_values_and_the_report_names_the_grid(scheme, found):
    model = user_model(quantize={"scheme": scheme, "bits": 4})
    x = torch.randn(2, 3, 20, 30)
    report = []
    tp.build(tp.from_pytorch(model, x), VNNI, int8=tp.calibrate(model, [x]), report=report)
    layer = next(r for r in report if r.layer == "6")
    assert layer.kind == "int8_filter_block" and f"weights exact on a {found} grid" in layer.reason
    folded = next(r for r in report if r.layer == "2")             # BatchNorm folded in: per channel, still a grid
    assert f"weights exact on a {found} grid" in folded.reason


def test_a_float_weight_goes_on_the_uniform_8bit_grid(int8_build):
    _, _, report = int8_build
    assert "weights on the uniform 8-bit grid" in next(r for r in report if r.layer == "6").reason


def test_a_layer_without_a_range_stays_float_naming_it():
    model = user_model()
    ranges = {k: v for k, v in tp.calibrate(model, [torch.randn(1, 3, 20, 30)]).items() if k != "6"}
    report = []
    tp.build(tp.from_pytorch(model, torch.randn(1, 3, 20, 30)), VNNI, int8=ranges, report=report)
    layer = next(r for r in report if r.layer == "6")
    assert layer.kind == "filter_block" and "no calibrated input range for layer '6'" in layer.passed_over


def linear_model(seed=0) -> nn.Module:
    """A classifier head of a user's: conv, flatten, two block-pruned linear layers (one of 21 features,
    not a multiple of the block), a small dense one."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 9 * 10, 40),
                          nn.ReLU(), nn.Linear(40, 21), nn.Tanh(), nn.Linear(21, 5)).eval()
    oneshot_prune(model, [{"module": "3", "kind": "block", "block_rows": 8, "sparsity": 0.75},
                          {"module": "5", "kind": "block", "block_rows": 4, "sparsity": 0.75,
                           "quantize": {"scheme": "sp2", "bits": 4}}], PatternLibrary.patdnn()).squash()
    return model


@pytest.mark.parametrize("family", ["vnni", "avx2"])
def test_block_pruned_linear_layers_run_in_int8_within_the_grids_of_float_pytorch(family):
    (require_vnni if family == "vnni" else require_avx2)()
    model = linear_model()
    batches = [torch.randn(3, 3, 9, 10) for _ in range(4)]
    report = []
    ex = tp.build(tp.from_pytorch(model, batches[0]), None if family == "vnni" else AVX2,
                  int8=tp.calibrate(model, batches), report=report)
    kinds = {r.layer: r for r in report}
    assert kinds["3"].kind == kinds["5"].kind == "int8_block"
    bits = 8 if family == "vnni" else 7                              # AVX2: codes of at most 64
    assert f"weights on the uniform {bits}-bit grid" in kinds["3"].reason and "exact on a sp2 grid" in kinds["5"].reason
    assert kinds["7"].kind is None                                  # dense: stays float
    vm = relax.VirtualMachine(ex, tvm.cpu())
    x = torch.randn(3, 3, 9, 10, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = model(x).numpy()
    got = vm["main"](tvm.runtime.tensor(x.numpy())).numpy()
    assert np.abs(got - ref).max() / np.abs(ref).max() < 0.03
    asm = "".join(m.inspect_source("asm") for m in ex.mod.imports if m.kind == "llvm")
    assert ("vpdpbusd" if family == "vnni" else "vpmaddubsw") in asm  # only the linear layers are int8 here


@pytest.mark.parametrize("family", ["vnni", "avx2"])
def test_a_linear_layer_on_a_4bit_grid_stores_two_codes_a_byte_and_computes_the_same(family):
    (require_vnni if family == "vnni" else require_avx2)()
    model = linear_model()
    x = torch.randn(3, 3, 9, 10)
    ranges = tp.calibrate(model, [x])
    outputs = []
    for options in (None, {"int8_block": {"nibbles_above_bytes": 0}}):   # 0: wherever the codes fit
        report = []
        ex = tp.build(tp.from_pytorch(model, x), None if family == "vnni" else AVX2, int8=ranges, options=options,
                      report=report)
        outputs.append(relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x.numpy())).numpy())
        reasons = {r.layer: r.reason for r in report}
    assert "4-bit codes two a byte" in reasons["5"]                # sp2, 4 bits: 15 codes
    assert "4-bit codes two a byte" not in reasons["3"]            # the 8-bit grid: more than 16
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_calibration_records_each_conv_input_range_and_clips_outliers_by_percentile():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 1))
    x = torch.zeros(1, 1, 40, 40)
    x[0, 0, 0, 0] = 100.0                                            # one outlier among 1600 values
    x[0, 0, 1:, :] = torch.linspace(-1, 1, 39 * 40).reshape(39, 40)
    full = tp.calibrate(model, [x])
    assert full["0"] == (pytest.approx(-1.0), 100.0) and full["2"][0] >= 0.0
    clipped = tp.calibrate(model, [x], percentile=99.0)
    assert clipped["0"][1] < 1.0
    with pytest.raises(ValueError, match="percentile must be in"):
        tp.calibrate(model, [x], percentile=30)
    with pytest.raises(ValueError, match="at least one batch"):
        tp.calibrate(model, [])


def test_the_input_grid_holds_zero_exactly():
    assert input_grid(0.0, 2.55) == (pytest.approx(0.01), 0)
    scale, zp = input_grid(-1.0, 3.0)
    assert zp == 64 and scale == pytest.approx(4 / 255)
    assert input_grid(0.5, 2.0)[1] == 0                                # widened down to 0.0
    with pytest.raises(ValueError, match="not finite"):
        input_grid(0.0, float("inf"))


class InvertedResidual(nn.Module):
    """A user's MobileNet-like block in their own layout: 1x1 expand (BatchNorm, ReLU6), depthwise 3x3,
    1x1 project added to its input, then a strided 1x1 and a head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 24, 3, padding=1)
        self.expand, self.bn = nn.Conv2d(24, 72, 1, bias=False), nn.BatchNorm2d(72)
        self.dw = nn.Conv2d(72, 72, 3, padding=1, groups=72)
        self.project = nn.Conv2d(72, 24, 1)
        self.down = nn.Conv2d(24, 40, 1, stride=2)
        self.head = nn.Linear(40, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        y = nn.functional.relu6(self.dw(nn.functional.relu6(self.bn(self.expand(x)))))
        x = torch.relu(self.down(x + self.project(y)))
        return self.head(x.mean((2, 3)))


def test_block_pruned_1x1_convs_run_in_int8_when_asked_with_their_stride_and_residual_add_as_float_pytorch():
    require_avx2()
    torch.manual_seed(0)
    model = InvertedResidual().eval()
    model.bn.running_mean.normal_()
    model.bn.running_var.uniform_(0.5, 2)
    oneshot_prune(model, [{"module": m, "kind": "block", "block_rows": 8, "sparsity": 0.75}
                          for m in ("expand", "project", "down")], PatternLibrary.patdnn()).squash()
    batches = [torch.randn(2, 3, 13, 19, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    mod, ranges = tp.from_pytorch(model, batches[0]), tp.calibrate(model, batches)
    report = []
    tp.build(mod, AVX2, int8=ranges, report=report)       # by default: between float layers they stay float, saying why
    assert {r.layer: r.kind for r in report}["expand"] == "block"
    assert "no int8 layer before or after it to chain with" in next(r for r in report if r.layer == "expand").passed_over
    with pytest.raises(ValueError, match=r"options\['int8_block'\]\['conv1x1'\] must be True, False or 'chained', got 'yes'"):
        tp.build(mod, AVX2, int8=ranges, options={"int8_block": {"conv1x1": "yes"}})
    report = []
    ex = tp.build(mod, AVX2, int8=ranges, options={"int8_block": {"conv1x1": True}}, report=report)
    kinds = {r.layer: r for r in report}
    assert kinds["expand"].kind == kinds["project"].kind == kinds["down"].kind == "int8_block"
    assert "uniform 7-bit grid" in kinds["expand"].reason and "zero point 0" in kinds["expand"].reason
    assert "zero point 0" not in kinds["down"].reason        # after the residual add: a signed input
    vm = relax.VirtualMachine(ex, tvm.cpu())
    agree, worst = 0, 0.0
    for i in range(16):
        x = torch.randn(2, 3, 13, 19, generator=torch.Generator().manual_seed(100 + i))
        with torch.no_grad():
            ref = model(x).numpy()
        got = vm["main"](tvm.runtime.tensor(x.numpy())).numpy()
        agree += int((got.argmax(1) == ref.argmax(1)).sum())
        worst = max(worst, float(np.abs(got - ref).max() / np.abs(ref).max()))
    assert worst < 0.03 and agree >= 31, (worst, agree)


class Bottleneck(nn.Module):
    """A user's ResNet-style block: 1x1 reduce with BatchNorm -> 3x3 -> 1x1 expand + the shortcut (a 1x1
    conv, or the input itself)."""

    def __init__(self, channels: int, out: int):
        super().__init__()
        self.reduce, self.bn = nn.Conv2d(channels, 24, 1, bias=False), nn.BatchNorm2d(24)
        self.mid = nn.Conv2d(24, 20, 3, padding=1)
        self.expand = nn.Conv2d(20, out, 1)
        self.shortcut = nn.Conv2d(channels, out, 1) if out != channels else None

    def forward(self, x):
        y = torch.relu(self.mid(torch.relu(self.bn(self.reduce(x)))))
        return torch.relu(self.expand(y) + (x if self.shortcut is None else self.shortcut(x)))


class TwoBottlenecks(nn.Module):
    """Two blocks after a stem, and a strided 1x1 side branch reading the second block's input too."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 40, 3, padding=1)
        self.first, self.second = Bottleneck(40, 48), Bottleneck(48, 48)
        self.side = nn.Conv2d(48, 32, 1, stride=2)
        self.head = nn.Linear(80, 10)

    def forward(self, x):
        x = self.first(torch.relu(self.stem(x)))
        return self.head(torch.cat([self.second(x).mean((2, 3)), torch.relu(self.side(x)).mean((2, 3))], 1))


def bottlenecks():
    torch.manual_seed(0)
    model = TwoBottlenecks().eval()
    for block in (model.first, model.second):
        block.bn.running_mean.normal_()
        block.bn.running_var.uniform_(0.5, 2)
    oneshot_prune(model, [{"module": m, "kind": "block", "block_rows": 8, "sparsity": 0.75}
                          for m in ("first.reduce", "first.expand", "first.shortcut", "second.reduce", "second.expand",
                                    "side")]
                  + [{"module": m, "kind": "filter_block_pattern", "filters": 4, "connectivity": 2.0}
                     for m in ("first.mid", "second.mid")], PatternLibrary.patdnn()).squash()
    batches = [torch.randn(2, 3, 13, 19, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    return model, tp.from_pytorch(model, batches[0]), tp.calibrate(model, batches)


@pytest.mark.parametrize("family", ["vnni", "avx2"])
def test_a_bottlenecks_1x1_convs_chain_in_8_bits_with_its_3x3_as_the_float_chain_would(monkeypatch, family):
    target = None if family == "vnni" else AVX2
    (require_vnni if family == "vnni" else require_avx2)()
    model, mod, ranges = bottlenecks()
    report = []
    fused = tp.build(mod, target, int8=ranges, report=report)
    r = {d.layer: (d.kind, d.reason) for d in report}
    assert {r[m][0] for m in ("first.reduce", "first.expand", "first.shortcut", "second.reduce", "side")} == {"int8_block"}
    # the dense stem in int8 (as a 1x1 conv over its patches) writes the codes first.reduce and first.shortcut read
    assert r["stem"][0] == "int8_dense_conv" and REQUANTIZED in r["stem"][1]
    assert REQUANTIZED in r["first.reduce"][1] and READS_CODES in r["first.reduce"][1]
    assert REQUANTIZED in r["first.mid"][1] and READS_CODES in r["first.mid"][1]
    assert READS_CODES in r["first.expand"][1] and REQUANTIZED not in r["first.expand"][1]   # its sum: float
    assert READS_CODES in r["first.shortcut"][1] and READS_CODES in r["side"][1]    # first.reduce's, second.reduce's codes
    # first.expand's sum: second.reduce's and side's input and second.expand's residual, all as codes
    assert all(said in r["first.expand"][1] for said in (RESIDUAL, WITH_CODES, CODES_ONLY))
    assert RESIDUAL_CODES not in r["first.expand"][1]                                   # first.shortcut's: float
    assert RESIDUAL_CODES in r["second.expand"][1] and WITH_CODES not in r["second.expand"][1]   # into the float head
    asm = "".join(m.inspect_source("asm") for m in fused.mod.imports if m.kind == "llvm")
    assert "int8_block_sparse_conv2d_1x1_x86_requantize" in asm and "int8_block_sparse_conv2d_1x1_x86_residual" in asm
    assert ("vpdpbusd" if family == "vnni" else "vpmaddubsw") in asm
    pipeline = importlib.import_module("tvm_patterns.passes.pipeline")
    monkeypatch.setattr(pipeline, "Int8ResidualEpilogue", lambda report=None: tvm.transform.Sequential([]))
    no_epilogue = tp.build(mod, target, int8=ranges)
    monkeypatch.setattr(pipeline, "Int8Requantize", lambda report=None: tvm.transform.Sequential([]))
    float_between = tp.build(mod, target, int8=ranges, options={"int8_block": {"conv1x1": True}})
    x = tvm.runtime.tensor(torch.randn(2, 3, 13, 19, generator=torch.Generator().manual_seed(7)).numpy())
    got, without_epilogue, chained_in_float = (relax.VirtualMachine(ex, tvm.cpu())["main"](x).numpy()
                                               for ex in (fused, no_epilogue, float_between))
    np.testing.assert_array_equal(without_epilogue, chained_in_float)   # requantized codes: those of the float chain
    # second.expand's residual read as codes: one more rounding, within the grids of the float build
    assert np.abs(got - without_epilogue).max() < 0.01 * np.abs(without_epilogue).max()
    with torch.no_grad():
        ref = model(torch.from_numpy(x.numpy())).numpy()
    assert np.abs(got - ref).max() < 0.03 * np.abs(ref).max()


class StemNet(nn.Module):
    """A user's network: a 7x7 stride-2 stem with BatchNorm and a 3x3 max pool, two block-pruned 1x1 convs
    reading the pool, a head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        self.a, self.b = nn.Conv2d(32, 48, 1), nn.Conv2d(32, 48, 1)
        self.head = nn.Linear(48, 10)

    def forward(self, x):
        x = self.stem(x)
        return self.head((torch.relu(self.a(x)) + self.b(x)).mean((2, 3)))


@pytest.mark.parametrize("family", ["vnni", "avx2"])
def test_a_dense_stem_runs_in_int8_and_writes_the_pooled_codes_both_1x1_convs_read(monkeypatch, family):
    target = None if family == "vnni" else AVX2
    (require_vnni if family == "vnni" else require_avx2)()
    torch.manual_seed(0)
    model = StemNet().eval()
    model.stem[1].running_mean.normal_()
    model.stem[1].running_var.uniform_(0.5, 2)
    oneshot_prune(model, [{"module": m, "kind": "block", "block_rows": 8, "sparsity": 0.5} for m in ("a", "b")],
                  PatternLibrary.patdnn()).squash()
    batches = [torch.randn(2, 3, 40, 44, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    mod, ranges = tp.from_pytorch(model, batches[0]), tp.calibrate(model, batches)
    report = []
    fused = tp.build(mod, target, int8=ranges, report=report)
    r = {d.layer: d for d in report}
    assert r["stem.0"].kind == "int8_dense_conv" and REQUANTIZED in r["stem.0"].reason
    assert "dense 7x7 as a 1x1 conv over its 147 patch codes" in r["stem.0"].reason
    assert all(r[m].kind == "int8_block" and READS_CODES in r[m].reason for m in ("a", "b"))
    asm = "".join(m.inspect_source("asm") for m in fused.mod.imports if m.kind == "llvm")
    assert "max_pool2d_uint8_nchw_x86" in asm and "int8_quantize_im2col_x86" in asm
    monkeypatch.setattr(importlib.import_module("tvm_patterns.passes.pipeline"), "Int8Requantize",
                        lambda report=None: tvm.transform.Sequential([]))
    float_between = tp.build(mod, target, int8=ranges, options={"int8_block": {"conv1x1": True}})
    x = torch.randn(2, 3, 40, 44, generator=torch.Generator().manual_seed(7))
    got, expected = (relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x.numpy())).numpy()
                     for ex in (fused, float_between))
    np.testing.assert_array_equal(got, expected)     # the pooled codes: those the float pool's quantization gives
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(got - ref).max() < 0.03 * np.abs(ref).max()


def test_1x1_convs_left_unchained_once_their_neighbours_stay_float_stay_float_too():
    require_vnni()
    model, mod, ranges = bottlenecks()
    report = []      # the 3x3 convs in float: only the first block's input, the int8 stem's, comes from an int8 layer
    tp.build(mod, int8=ranges, options={"int8_filter_block": {"filters": 8}}, report=report)
    kinds = {r.layer: r for r in report}
    assert kinds["first.mid"].kind == kinds["second.mid"].kind == "filter_block"
    assert kinds["stem"].kind == "int8_dense_conv"
    assert kinds["first.reduce"].kind == kinds["first.shortcut"].kind == "int8_block"
    for layer in ("first.expand", "second.reduce", "second.expand", "side"):
        assert kinds[layer].kind == "block" and "no int8 layer before or after it" in kinds[layer].passed_over


def first_conv_into_int8(size: int) -> tuple:
    """A dense first conv (its 16 float channels at size x size; too few MACs an element to run in int8 itself)
    into an int8 filter-block conv."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()).eval()
    oneshot_prune(model, [{"module": "2", "kind": "filter_block_pattern", "filters": 4, "connectivity": 2.0}],
                  PatternLibrary.patdnn()).squash()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(4))
    return model, x, tp.calibrate(model, [x])


def built_function_names(mod, ranges) -> tuple:
    """(the int8 build of ``mod``, the names of its functions after fusion)."""
    names = []

    @tvm.instrument.pass_instrument
    class AfterFusion:
        def run_after_pass(self, module, info):
            if info.name == "FuseTIR":
                names.extend(gv.name_hint for gv in module.get_global_vars())

    with tvm.transform.PassContext(instruments=[AfterFusion()]):
        ex = tp.build(mod, int8=ranges)
    return ex, names


def test_an_int8_convs_large_float_input_is_quantized_in_the_epilogue_of_the_conv_that_writes_it(monkeypatch):
    """VGG-16's first conv: 12.8 MB of float activations become 3.2 MB of codes written by the conv itself;
    the codes are those of the quantize kernel (bit-exact outputs)."""
    require_avx2()
    model, x, ranges = first_conv_into_int8(290)               # 16 x 290 x 290 floats: 5.4 MB
    mod = tp.from_pytorch(model, x)
    ex, names = built_function_names(mod, ranges)
    assert any("conv2d" in n and "cast" in n for n in names), names          # the first conv writes uint8
    assert any(n.startswith("int8_quantize_rowpairs_x86_layout") for n in names)
    assert "int8_quantize_rowpairs_x86" not in names                          # no float quantize kernel left
    xt = tvm.runtime.tensor(x.numpy())
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](xt).numpy()
    monkeypatch.setattr(importlib.import_module("tvm_patterns.passes.pipeline"), "Int8QuantizeEpilogue",
                        lambda: tvm.transform.Sequential([]))
    kernel = relax.VirtualMachine(tp.build(mod, int8=ranges), tvm.cpu())["main"](xt).numpy()
    np.testing.assert_array_equal(got, kernel)
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(got - ref).max() / np.abs(ref).max() < 0.03


def test_a_small_float_input_of_an_int8_conv_keeps_its_quantize_kernel():
    """Under 4 MB the floats stay in cache between the kernels: moving the quantization does not pay."""
    require_avx2()
    model, x, ranges = first_conv_into_int8(64)
    _, names = built_function_names(tp.from_pytorch(model, x), ranges)
    assert "int8_quantize_rowpairs_x86" in names and not any("cast" in n for n in names), names


class BasicDownBlock(nn.Module):
    """A user's ResNet basic block at stride 2: two pruned 3x3 convs, and a dense 1x1 shortcut too small
    to pay in int8, whose float sum the second conv's epilogue adds."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(8, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
        self.shortcut = nn.Sequential(nn.Conv2d(8, 16, 1, 2, bias=False), nn.BatchNorm2d(16))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        y = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + self.shortcut(x))
        return self.fc(y.mean((2, 3)))


def test_an_int8_convs_epilogue_fused_with_a_float_shortcut_conv_builds_and_agrees_with_float_pytorch():
    require_vnni()
    torch.manual_seed(0)
    model = BasicDownBlock().eval()
    for bn in (model.bn1, model.bn2, model.shortcut[1]):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
    oneshot_prune(model, [{"module": m, "kind": "filter_block_pattern", "filters": 4, "connectivity": 2.0}
                          for m in ("conv1", "conv2")], PatternLibrary.patdnn()).squash()
    batches = [torch.randn(3, 8, 28, 28, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    report = []
    ex = tp.build(tp.from_pytorch(model, batches[0]), int8=tp.calibrate(model, batches), report=report)
    kinds = {r.layer: r.kind for r in report}
    assert kinds["conv1"] == kinds["conv2"] == "int8_filter_block" and kinds["shortcut.0"] is None
    x = torch.randn(3, 8, 28, 28, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        ref = model(x).numpy()
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x.numpy())).numpy()
    assert np.abs(got - ref).max() < 0.03 * np.abs(ref).max()
