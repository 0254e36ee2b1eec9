"""From a PyTorch model pruned with torch.nn.utils.prune to a TVM build that matches it."""
import pytest
import torch
import torch.nn.utils.prune as prune
import tvm_ffi
from tvm.s_tir import Schedule
from tvm.tirx import ForKind

import tvm_patterns as tp
from schedules import pattern_conv2d_nchw_x86 as x86
import schedules.dense_conv2d_nchw_x86 as dense_conv
from schedules.dense_conv2d_nchw_x86 import INPUT_LAYOUTS, channel_vector_knobs
from schedules.dense_matmul_x86 import default_vectors
from tvm_patterns.apps import demo
from tvm_patterns.targets import host, target_name
from tvm_patterns.tuning import extract_tasks
from tvm_patterns.tuning.tasks import every_point, replayed
from tvm_patterns.apps.models import BasicBlock
from tvm_patterns.sparsity import PatternLibrary, project_pattern_connectivity

from ..layer_check import assert_matches_torch
from ..tuning_helpers import tuned_error, write_log

LIB = PatternLibrary.patdnn()


def pattern_mask(conv, connectivity):
    w = conv.weight.detach().numpy()
    return torch.from_numpy((project_pattern_connectivity(w, LIB, connectivity) != 0).astype("float32"))


def test_model_pruned_with_torch_prune_masks_builds_and_matches_torch():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
        BasicBlock(16, 16), BasicBlock(16, 32, stride=2),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10)).eval()
    pruned = {n: m for n, m in model.named_modules()
              if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3) and m.in_channels > 3}
    for m in pruned.values():
        prune.custom_from_mask(m, "weight", pattern_mask(m, 2.0))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.running_mean.uniform_(-0.2, 0.2)
    assert hasattr(model[2].conv1, "weight_orig")        # a real prune mask, not a zeroed weight

    report = []
    assert_matches_torch(model, torch.randn(2, 3, 12, 12), report=report)
    convs = [r for r in report if r.op == "relax.nn.conv2d"]
    assert sorted(r.layer for r in convs if r.rewritten) == sorted(pruned)
    assert [r.layer for r in convs if not r.rewritten] == ["0", "3.shortcut.0"]


@pytest.mark.parametrize("out_features, vectors", [(4096, 4), (1000, 5), (24, 3), (10, 5), (7, 7)])
def test_a_dense_linear_layer_is_tiled_by_the_divisor_nearest_four_vectors_and_matches_torch(out_features, vectors):
    assert default_vectors(out_features) == vectors
    assert_matches_torch(torch.nn.Sequential(torch.nn.Linear(40, out_features), torch.nn.ReLU()), torch.randn(3, 40))


@pytest.mark.parametrize("kernel, stride, padding, width, deinterleaved", [
    (7, 2, 3, 20, True), (1, 2, 0, 12, True), (3, 2, 1, 11, False), (3, 1, 1, 12, False)])  # 5 -> 12 channels: rows
def test_a_dense_conv_reads_stride_2_rows_deinterleaved_where_the_padded_width_is_even(
        kernel, stride, padding, width, deinterleaved):
    """(7x7 stride 2 like ResNet's first conv: x1.8 on Zen5.) Odd padded widths keep plain rows."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(5, 12, kernel, stride, padding), torch.nn.ReLU()).eval()
    x = torch.randn(2, 5, 9, width)
    report = []
    assert_matches_torch(model, x, report=report)
    assert not report[0].rewritten
    (task,), _ = extract_tasks(tp.from_pytorch(model, x), host())
    sch = task.default_schedule(host())
    rows = [int(d) for d in sch.get(sch.get_sblock("pad_temp")).writes[0].source.shape[2:]]
    padded = width + 2 * padding
    assert rows == ([9 + 2 * padding, 2, padded // 2] if deinterleaved else [9 + 2 * padding, padded])


WIDEST = x86.isa_of(host()).lanes[-1]


@pytest.mark.parametrize("kernel, stride, padding, cin, cout, vector", [
    (1, 1, 0, 16, 32, WIDEST), (1, 2, 1, 16, 32, WIDEST), (3, 2, 1, 17, 32, WIDEST), (3, 1, 1, 3, 32, 2),
    (1, 1, 0, 16, 12, 2)])
def test_a_dense_conv_whose_channels_fill_vectors_is_vectorized_over_its_channels(kernel, stride, padding, cin,
                                                                                 cout, vector):
    """ResNet-50's 1x1 convs on Zen5: x2.4..x12.6 against vectors along the (7- to 56-wide) rows.
    3 input channels (a first conv: each row vector load feeds the whole tile) or 12 output
    channels: vectors along the 10-wide rows (2 lanes)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, kernel, stride, padding), torch.nn.ReLU()).eval()
    x = torch.randn(2, cin, 6, 10)
    assert_matches_torch(model, x)
    (task,), _ = extract_tasks(tp.from_pytorch(model, x), host())
    sch = task.default_schedule(host())
    conv = sch.get_sblock("conv2d_nchw_update")
    vectorized = [int(sch.get(loop).extent) for loop in sch.get_loops(conv) if sch.get(loop).kind == ForKind.VECTORIZED]
    assert vectorized == [vector]


@pytest.mark.parametrize("kernel, stride, padding, width, whole_zmm", [
    (7, 2, 3, 64, True), (3, 1, 1, 32, True), (3, 2, 1, 48, False)])     # output rows 32, 32, 24 wide
def test_a_first_conv_takes_16_lane_row_vectors_and_tiles_of_8_channels_on_avx512(kernel, stride, padding, width,
                                                                                  whole_zmm):
    """3 input channels (ResNet-50's and VGG-16's first convs: x1.4 on a Xeon against 8 lanes x 4
    channels); AVX2 keeps 8 lanes."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 24, kernel, stride, padding), torch.nn.ReLU()).eval()
    x = torch.randn(2, 3, 5, width)
    assert_matches_torch(model, x)
    (task,), _ = extract_tasks(tp.from_pytorch(model, x), host())
    sch = task.default_schedule(host())
    conv = sch.get_sblock("conv2d_nchw_update")
    vectorized = [int(sch.get(loop).extent) for loop in sch.get_loops(conv) if sch.get(loop).kind == ForKind.VECTORIZED]
    assert vectorized == [WIDEST if whole_zmm else 8]
    assert dense_conv.default_knobs(64, 112, x86.AVX512) == {"ki": 8, "wm": 1, "unroll": 0, "lanes": 16}
    assert dense_conv.default_knobs(64, 224, x86.AVX512) == {"ki": 8, "wm": 2, "unroll": 0, "lanes": 16}
    assert dense_conv.default_knobs(32, 112, x86.AVX2) == dense_conv.default_knobs(32, 112) == {"ki": 4, "wm": 2,
                                                                                                 "unroll": 0}
    assert len(task.design_space(Schedule(task.mod))) == (2 if WIDEST == 16 and whole_zmm else 1)  # one per width
    assert dense_conv.row_vector_widths(112, x86.AVX512) == [8, 16] and dense_conv.row_vector_widths(112, x86.AVX2) == [8]


@pytest.mark.parametrize("K, W, tile", [(64, 224, (2, 7)), (256, 28, (2, 7)), (512, 7, (2, 7)), (32, 30, (2, 6)),
                                        (16, 30, (1, 10)), (64, 13, (1, 13))])
def test_the_default_channel_vector_tile_is_up_to_14_accumulators_in_up_to_2_channel_vectors(K, W, tile):
    """16 lanes (AVX-512): as tuning ResNet-50 found, 2 vectors x 7 pixels where the width allows;
    the former default, 1 x 28 pixels, spilled its 28 accumulators."""
    knobs = channel_vector_knobs(K, W, x86.AVX512)
    assert (knobs["kv"], knobs["wt"]) == tile


@pytest.mark.parametrize("K, W, tile", [(256, 56, (2, 4)), (64, 28, (2, 4)), (1024, 14, (1, 7)), (2048, 7, (1, 7)),
                                        (8, 56, (1, 8))])
def test_with_16_vector_registers_the_default_channel_vector_tile_is_up_to_8_accumulators(K, W, tile):
    """8 lanes (AVX2): half the registers, so the weight vectors and the broadcast pixel fit beside
    the tile (2 x 7 was x1.13..x2.06 slower on Zen3)."""
    knobs = channel_vector_knobs(K, W, x86.AVX2)
    assert (knobs["kv"], knobs["wt"]) == tile


@pytest.mark.parametrize("kernel", [1, 3])
def test_every_point_of_the_channel_vector_space_matches_torch(kernel, tmp_path):
    """Channel tiles, row tiles and unroll of a strided, padded conv on a batch of 2, with the input
    read as NCHW and packed channels-last; the default is a point of the NCHW space."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(16, 2 * WIDEST, kernel, 2, 1), torch.nn.ReLU()).eval()
    x = torch.randn(2, 16, 6, 13)
    mod = tp.from_pytorch(model, x)
    (task,), _ = extract_tasks(mod, host())
    spaces = task.design_space(Schedule(task.mod))
    assert len(spaces) == len(INPUT_LAYOUTS)
    assert any(tvm_ffi.structural_equal(replayed(spaces[0], p, task.mod).mod, task.default_schedule(host()).mod)
               for p in every_point(spaces[0]))
    for layout, space in zip(INPUT_LAYOUTS, spaces):
        for n, point in enumerate(every_point(space)):
            db_dir = tmp_path / layout / str(n) / target_name(host())
            write_log(db_dir, host(), [(task, replayed(space, point, task.mod))])
            assert tuned_error(model, x, mod, db_dir) < 1e-4, (layout, point)


def test_a_channel_vector_conv_of_one_block_of_channels_still_runs_its_rows_in_parallel():
    """MobileNet-V2's 1x1 conv 32 -> 16 at 112x112 had one (image, block of channels) pair, so one
    parallel iteration: it ran on one thread."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(32, 2 * WIDEST, 1), torch.nn.ReLU6()).eval()
    x = torch.randn(1, 32, 11, 13)
    assert_matches_torch(model, x)
    (task,), _ = extract_tasks(tp.from_pytorch(model, x), host())
    sch = task.default_schedule(host())
    parallel = [int(sch.get(loop).extent) for loop in sch.get_loops(sch.get_sblock("conv2d_nchw_update"))
                if sch.get(loop).kind == ForKind.PARALLEL]
    assert len(parallel) == 1 and parallel[0] % 11 == 0     # rows x blocks of channels


def test_the_channels_last_space_copies_the_padded_input_once_along_its_channels():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(16, 2 * WIDEST, 1, 2, 0)).eval()
    (task,), _ = extract_tasks(tp.from_pytorch(model, torch.randn(1, 16, 14, 14)), host())
    nchw, last = task.design_space(Schedule(task.mod))
    names = [b.name_hint for b in _blocks(last)]
    assert names.count("pad_temp") == 1
    assert [n for n in names if n != "pad_temp"] == [b.name_hint for b in _blocks(nchw)]
    pad = last.get(last.get_sblock("pad_temp"))
    assert [int(d) for d in pad.writes[0].source.shape] == [1, 14, 14, 16]   # N, H, W, C


def _blocks(sch: Schedule) -> list:
    return [sch.get(b) for b in sch.get_child_blocks(sch.get_sblock("root"))]


def test_demo_compresses_every_layer_checks_against_pytorch_and_prints_the_latency_table(capsys, tmp_path):
    csv = tmp_path / "demo.csv"
    assert demo.main(["--nets", "resnet18", "--image-size", "32", "--csv", str(csv), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "tvm_sparse: relative max error vs PyTorch" in out and "FAIL" not in out
    assert "Latency per network" in out and "Slowest kernels of the sparse build" in out
    header, row = csv.read_text().splitlines()[:2]
    cols = dict(zip(header.split(","), row.split(",")))
    assert cols["network"] == "resnet18" and cols["correct"] == "True" and cols["threads"] == "1"
    # 3x3 convs 8.1x fewer MACs (all but the stem), the 1x1 shortcuts and the FC 4x: the whole net in between
    assert float(cols["tvm_sparse_ms"]) > 0 and 4 < float(cols["mac_ratio"]) < 8.1
    assert int(cols["layers_total"]) == 21 and int(cols["layers_rewritten"]) == 20    # all but the stem
    assert float(cols["weight_bytes_packed"]) < 0.5 * float(cols["weight_bytes_dense"])   # values and indices
    assert float(cols["pytorch_p10_ms"]) <= float(cols["pytorch_ms"]) <= float(cols["pytorch_p90_ms"])


def test_demo_int8_adds_an_int8_row_per_network_with_its_int8_layers_chained(capsys, tmp_path):
    from ..schedules.test_int8_filter_block_conv_avx2 import require_avx2
    require_avx2()                      # the host's int8 kernels: VNNI where it has them, else AVX2
    csv = tmp_path / "demo.csv"
    assert demo.main(["--nets", "vgg16", "--image-size", "32", "--int8", "--csv", str(csv), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "tvm_int8: relative max error vs PyTorch" in out and "FAIL" not in out
    assert "the int8 build ran 16 layers in int8, 12 of them writing 8-bit codes for the next" in out   # the first conv too
    rows = [dict(zip(csv.read_text().splitlines()[0].split(","), line.split(",")))
            for line in csv.read_text().splitlines()[1:]]
    assert [(r["network"], r["dtype"]) for r in rows] == [("vgg16", "float32"), ("vgg16", "int8")]
    assert rows[1]["correct"] == "True" and float(rows[1]["tvm_sparse_ms"]) > 0
    assert float(rows[1]["weight_ratio"]) > 3 * float(rows[0]["weight_ratio"])    # a byte a weight, not four


def test_demo_uses_a_tuning_log_only_when_there_is_one_for_this_cpu(tmp_path, capsys):
    from tvm_patterns.targets import host, target_name
    from tvm_patterns.tuning.database import RECORDS

    assert demo.tuning_log_for(str(tmp_path), host()) is None
    assert f"no tuning log for {target_name(host())}" in capsys.readouterr().out
    (tmp_path / target_name(host())).mkdir()
    (tmp_path / target_name(host()) / RECORDS).write_text("")
    assert demo.tuning_log_for(str(tmp_path), host()) == str(tmp_path)
    assert demo.tuning_log_for("none", host()) is None
