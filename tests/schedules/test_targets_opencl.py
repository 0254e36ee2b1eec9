"""Mali and Adreno: the pattern conv's OpenCL kernels, read from the built module and run on PoCL, against PyTorch."""
import re

import numpy as np
import pytest
import torch
from tvm import te

import tvm_patterns as tp
from tvm_patterns.devices.opencl_launcher import OpenCLLauncher, host_function, lower_tir

from .test_pattern_conv import one_kernel_filter, pattern_conv

TARGETS = {"mali": tp.targets.mali, "adreno": tp.targets.adreno}
RTOL = 1e-4

CASES = {  # name: (batch, cin, cout, height, width, conv kwargs); a pattern conv + ReLU
    "odd shapes, batch 2, stride 2": (2, 5, 7, 9, 11, {"stride": 2}),
    "basic, cropped write-back": (1, 16, 32, 14, 14, {}),
    "width a multiple of 8 (vstore4 write-back), no bias": (1, 8, 12, 10, 16, {"bias": False}),
    "a filter with one kernel, padding 0": (1, 8, 8, 9, 9, {"edit": one_kernel_filter, "padding": 0}),
}


def check(model, x, target_name):
    with torch.no_grad():
        ref = model.eval()(x).numpy()
    runner = OpenCLLauncher.build(tp.from_pytorch(model, x), TARGETS[target_name]())
    out = runner(x.numpy())
    assert out.shape == ref.shape
    err = np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30)
    assert err < RTOL, f"relative max error {err:.2e}"
    return runner


@pytest.mark.parametrize("target_name", TARGETS)
@pytest.mark.parametrize("case", CASES)
def test_pattern_conv_on_pocl_matches_torch(case, target_name):
    n, cin, cout, h, w, kw = CASES[case]
    torch.manual_seed(0)
    model = torch.nn.Sequential(pattern_conv(cin, cout, **kw), torch.nn.ReLU())
    runner = check(model, torch.randn(n, cin, h, w), target_name)
    # One PrimFunc (conv + bias + relu fused), two kernels: padding, then the conv.
    assert [len(h.kernels) for h in runner.hosts.values()] == [2]
    limit = int(runner.target.attrs["max_num_threads"])
    assert all(np.prod(k.local) <= limit for k in runner.kernels)


@pytest.mark.parametrize("target_name", TARGETS)
def test_a_network_with_dense_ops_left_to_dlight(target_name):
    """Two pattern convs, a pooling and a linear layer: several PrimFuncs, reshapes, dlight's kernels."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(pattern_conv(4, 8), torch.nn.ReLU(), pattern_conv(8, 8, stride=2, seed=1),
                                torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(8 * 9, 10))
    runner = check(model, torch.randn(1, 4, 12, 12), target_name)
    assert len(runner.hosts) >= 3


def test_mali_kernels_use_float4():
    torch.manual_seed(0)
    model = torch.nn.Sequential(pattern_conv(8, 8), torch.nn.ReLU())
    runner = check(model, torch.randn(1, 8, 8, 16), "mali")
    conv = runner.kernels[-1].name
    body = runner.source.split(f"__kernel void {conv}(")[-1]
    assert "float4" in body and "vstore4" in body


def test_launch_arguments_follow_the_kernel_signatures():
    """The host function's argument order (kernel params sorted by name, temporaries included) is the
    order of the OpenCL signatures."""
    torch.manual_seed(0)
    runner = check(torch.nn.Sequential(pattern_conv(5, 7, stride=2), torch.nn.ReLU()), torch.randn(1, 5, 9, 11), "mali")
    for k in runner.kernels:
        sig = re.search(rf"__kernel void {k.name}\(([^)]*)\)\s*{{", runner.source).group(1)
        names = [p.split()[-1].removesuffix("_ptr") for p in sig.split(",")]
        assert names == k.args
    host = next(iter(runner.hosts.values()))
    assert list(host.temporaries) == ["pattern_conv2d_pad"]


def test_work_group_size_is_a_knob():
    from schedules.pattern_conv2d_nchw_opencl import Knobs, schedule_mali
    from tvm import s_tir

    from tvm_patterns.computes.pattern_conv2d import MAIN_BLOCK, PatternConvGeometry, pattern_conv2d

    geom = PatternConvGeometry(1, 4, 16, 16, 8)
    data = te.placeholder((1, 4, 16, 16), name="data")
    length = te.placeholder((8,), "int32", name="length")
    offset = te.placeholder((8, 4, 4), "int32", name="offset")
    value = te.placeholder((8, 4, 4), name="value")
    out = pattern_conv2d(data, length, offset, value, geom)
    func = te.create_prim_func([data, length, offset, value, out])
    target = tp.targets.mali()
    for knobs, local in [(Knobs(vector=4, rows=2, work_group=16), 16), (Knobs(vector=4, rows=1, work_group=64), 64)]:
        sch = s_tir.Schedule(func)
        schedule_mali(sch, sch.get_sblock(MAIN_BLOCK), target, knobs)
        scheduled = sch.mod["main"]
        lowered = lower_tir(sch.mod, target)
        conv = host_function(scheduled, lowered["main"]).kernels[-1]
        assert conv.local == (local, 1, 1)
        assert conv.groups[0] * local == 8 * (16 // knobs.rows) * (16 // 4)


@pytest.mark.parametrize("target_name", TARGETS)
def test_sampled_points_of_the_design_space_match_torch(target_name, tmp_path):
    """Vector width, rows per work item and work-group size are sampled; every point is correct
    and the preset is a point of the same space."""
    from tvm.s_tir import Schedule
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    from tvm_patterns.targets import target_name as log_name
    from tvm_patterns.tuning import extract_tasks
    from tvm_patterns.tuning.database import ApplyTuningLog

    torch.manual_seed(0)
    model = torch.nn.Sequential(pattern_conv(5, 7, stride=2), torch.nn.ReLU()).eval()
    x = torch.randn(2, 5, 9, 11)
    mod, target = tp.from_pytorch(model, x), TARGETS[target_name]()
    [task] = [t for t in extract_tasks(mod, target)[0] if t.block == "pattern_conv2d"]
    preset = [i.kind.name for i in task.default_schedule(target).trace.insts]
    assert preset.count("SampleCategorical") == 2 and "SamplePerfectTile" in preset
    with torch.no_grad():
        ref = model(x).numpy()
    limit = int(target.attrs["max_num_threads"])
    seen = set()
    for seed in (1, 2, 3):
        db_dir = tmp_path / str(seed) / log_name(target)
        db_dir.mkdir(parents=True)
        db = ms.database.JSONDatabase(work_dir=str(db_dir))
        point = task.design_space(Schedule(task.mod, seed=seed))
        db.commit_tuning_record(ms.database.TuningRecord(
            point.trace, db.commit_workload(task.mod), [1e-9], target, ArgInfo.from_prim_func(task.mod["main"])))
        runner = OpenCLLauncher.build(mod, target, extra_tir_passes=[ApplyTuningLog(str(db_dir), target)])
        out = runner(x.numpy())
        assert np.abs(out - ref).max() / np.abs(ref).max() < RTOL
        conv = runner.kernels[-1]
        assert np.prod(conv.local) <= limit
        seen.add(conv.local)
    assert len(seen) > 1      # the work-group size really varies across points
