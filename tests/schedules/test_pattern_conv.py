"""The pattern conv kernel (compute + host schedule) against torch.nn.functional.conv2d."""
import numpy as np
import pytest
import torch
import tvm
from tvm import te
from tvm.s_tir import Schedule
from tvm.target import Target

import tvm_patterns as tp
from schedules import pattern_conv2d_by_pattern_x86 as by_pattern
from schedules import pattern_conv2d_nchw_x86 as x86
from tvm_patterns.sparsity import PatternLibrary, project_pattern_connectivity
from tvm_patterns.passes import pipeline
from tvm_patterns.computes.pattern_conv2d import PatternConvGeometry, padded_input
from tvm_patterns.targets import arm_cpu, host, mali, target_name
from tvm_patterns.tuning import extract_tasks

from ..layer_check import assert_matches_torch
from ..tuning_helpers import points_of, tuned_error, write_log

LIB = PatternLibrary.patdnn()


def pattern_conv(cin, cout, stride=1, padding=1, bias=True, connectivity=3.6, seed=0, edit=None):
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(cin, cout, 3, stride=stride, padding=padding, bias=bias)
    w = project_pattern_connectivity(conv.weight.detach().numpy(), LIB, connectivity)
    if edit is not None:
        edit(w)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w))
    return conv


def zero_filter(w):
    w[1] = 0


def one_kernel_filter(w):
    w[0] = 0
    w[0, 2].flat[[1, 3, 4, 5]] = [0.5, -1.0, 2.0, 0.25]


def two_odd_pattern_convs(seed: int) -> torch.nn.Sequential:
    """Odd channels; the second conv with stride 2, padding 0 and 2x connectivity pruning."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(pattern_conv(6, 12), torch.nn.ReLU(),
                               pattern_conv(12, 10, stride=2, padding=0, connectivity=2.0)).eval()


CASES = {  # name: (batch, cin, cout, height, width, conv kwargs)
    "basic": (1, 16, 32, 14, 14, {}),
    "odd channels, batch 2, odd width": (2, 5, 7, 9, 11, {}),
    "stride 2": (1, 8, 8, 12, 12, {"stride": 2}),
    "padding 0": (1, 8, 8, 10, 10, {"padding": 0}),
    "stride 2, padding 0, odd size": (1, 8, 16, 9, 17, {"stride": 2, "padding": 0}),
    "rectangular stride and padding": (1, 6, 4, 8, 13, {"stride": (1, 2), "padding": (1, 0)}),
    "width a multiple of the vector": (1, 12, 8, 16, 32, {}),
    "a 56-wide row, 4 zmm vectors on AVX-512": (1, 6, 5, 6, 56, {}),
    "a 28-wide row, 2 zmm vectors on AVX-512, an odd height": (2, 7, 9, 13, 28, {}),
    "a 28-wide row of stride 2, 2 zmm vectors on AVX-512": (1, 6, 8, 12, 56, {"stride": 2}),
    "a 28-wide row of stride 2 down only": (1, 5, 6, 16, 28, {"stride": (2, 1)}),
    "aligned rows: batch 2, padding 0, stride 2 down only": (2, 5, 6, 9, 40, {"stride": (2, 1), "padding": 0}),
    "no bias, dense connectivity": (1, 4, 6, 7, 7, {"bias": False, "connectivity": 1.0}),
    "1x1 output": (1, 16, 8, 2, 2, {"stride": 2}),
    "an all-zero filter": (1, 8, 8, 9, 9, {"edit": zero_filter}),
    "a filter with one kernel": (1, 8, 8, 9, 9, {"edit": one_kernel_filter}),
}


@pytest.mark.parametrize("implementation", ["offsets", "patterns"])
@pytest.mark.parametrize("case", CASES)
def test_pattern_conv_matches_torch(case, implementation):
    n, cin, cout, h, w, kw = CASES[case]
    model = torch.nn.Sequential(pattern_conv(cin, cout, **kw), torch.nn.ReLU())
    report = []
    assert_matches_torch(model, torch.randn(n, cin, h, w), report=report,
                         options={"pattern": {"implementation": implementation}})
    assert [r.kind for r in report] == ["pattern"], report
    assert report[0].reason.endswith(f"{implementation} implementation"), report[0].reason


def test_the_build_uses_per_pattern_code_on_x86_where_a_row_holds_one_vector_two_zmm_or_four_or_more():
    """Measured on Zen5: per-pattern code wins where an output row holds 4+ vectors and at one (the
    whole row block's accumulators then stay in registers over all kernels); it loses at two with the
    default tile, but wins on AVX-512 with the whole row of two zmm vectors as the tile."""
    conv = pattern_conv(8, 8)
    avx512 = Target({"kind": "llvm", "mcpu": "skylake-avx512"})
    avx2 = Target({"kind": "llvm", "mcpu": "znver1"})
    for target, hw, expected in [(avx512, 56, "patterns"), (avx512, 64, "patterns"), (avx512, 32, "patterns"),
                                 (avx512, 14, "patterns"), (avx512, 7, "patterns"), (avx2, 32, "patterns"),
                                 (avx2, 16, "offsets"), (avx2, 8, "patterns"), (arm_cpu(), 56, "offsets")]:
        report = []
        with target:
            pipeline(target, report=report)(tp.from_pytorch(conv, torch.randn(1, 8, hw, hw)))
        assert report[0].reason.endswith(f"{expected} implementation"), (target, hw, report[0].reason)


def test_a_row_of_two_zmm_vectors_is_one_register_tile_of_up_to_eight_accumulators_kept_over_all_kernels():
    """4 rows x the whole 32-wide row (2 where the conv reads every other input row), kernels inner;
    other widths and AVX2 keep the offset-table kernel's default tile."""
    knobs = by_pattern.default_knobs
    assert knobs(28, 32, x86.AVX512) == x86.Knobs(rows=4, vectors=2, order="kernels_inner", lanes=16)
    assert knobs(28, 32, x86.AVX512, stride=2) == x86.Knobs(rows=2, vectors=2, order="kernels_inner", lanes=16)
    assert knobs(13, 32, x86.AVX512).rows == 1
    assert knobs(28, 64, x86.AVX512) == x86.default_knobs(28, 64, x86.AVX512)
    assert knobs(14, 16, x86.AVX2) == x86.default_knobs(14, 16, x86.AVX2)
    for stride, hw, stride_down in [(1, 28, 1), (2, 56, 2), ((2, 1), 28, 2)]:     # read from the kernel itself
        mod = tp.from_pytorch(torch.nn.Sequential(pattern_conv(8, 8, stride=stride)), torch.randn(1, 8, hw, hw))
        (task,), _ = extract_tasks(mod, host(), options={"pattern": {"implementation": "patterns"}})
        sch = Schedule(task.mod)
        assert x86.row_stride(sch, sch.get_sblock(task.block)) == stride_down


def test_per_pattern_code_on_a_target_without_its_schedule_is_refused_by_layer():
    mod = tp.from_pytorch(torch.nn.Sequential(pattern_conv(8, 8)), torch.randn(1, 8, 9, 9))
    with pytest.raises(ValueError, match="layer 0: the per-pattern implementation has a schedule for x86 and ARM"):
        tp.build(mod, mali(), options={"pattern": {"implementation": "patterns"}})
    with pytest.raises(ValueError, match=r"options\['pattern'\]\['implementation'\] must be one of .*, got 'fast'"):
        tp.build(mod, options={"pattern": {"implementation": "fast"}})


PER_PATTERN_POINTS = [(lanes, order) for lanes in x86.isa_of(host()).lanes for order in by_pattern.ORDERS]


@pytest.mark.parametrize("lanes,order", PER_PATTERN_POINTS)
def test_every_loop_order_and_vector_width_of_the_per_pattern_space_matches_torch(lanes, order, tmp_path):
    """Three sampled points (tiles, unroll) of one loop order and vector width on odd channels,
    batch 2, a cropped width, stride 2 and padding 0; a kernel whose padded width is not a multiple
    of ``lanes`` takes the 8-lane point."""
    model = two_odd_pattern_convs(seed=2)
    x = torch.randn(2, 6, 13, 35)
    options = {"pattern": {"implementation": "patterns"}}
    mod = tp.from_pytorch(model, x)
    tasks, _ = extract_tasks(mod, host(), options=options)
    assert [t.block for t in tasks] == ["pattern_conv2d_by_pattern"] * 2
    for seed in (1, 2, 3):
        db_dir = tmp_path / str(seed) / target_name(host())
        points = []
        for t in tasks:
            keys = by_pattern.space_points(Schedule(t.mod), host())
            key = (lanes, order) if (lanes, order) in keys else (x86.VECTOR, order)
            points.append((t, t.design_space(Schedule(t.mod, seed=seed))[keys.index(key)]))
        write_log(db_dir, host(), points)
        assert tuned_error(model, x, mod, db_dir, options=options) < 1e-4, (seed, [str(p.trace) for _, p in points])


def test_the_per_pattern_default_is_the_point_of_its_widest_vector_and_kernels_outer_order_or_whole_rows():
    """Kernels outer, or kernels inner where the tile is a whole row of two zmm vectors (on AVX-512
    the second conv's 17-wide rows)."""
    mod = tp.from_pytorch(two_odd_pattern_convs(seed=2), torch.randn(2, 6, 13, 35))
    tasks, _ = extract_tasks(mod, host(), options={"pattern": {"implementation": "patterns"}})
    for t in tasks:
        keys = by_pattern.space_points(Schedule(t.mod), host())
        found = points_of(t.design_space(Schedule(t.mod)), t.default_schedule(host()), t.mod)
        width = x86.padded_width(Schedule(t.mod), t.block)
        widest = x86.usable_lanes(width, x86.isa_of(host()))[-1]
        order = "kernels_inner" if by_pattern.whole_row_tile(width, x86.isa_of(host())) else "kernels_outer"
        assert [keys[n] for n, _ in found] == [(widest, order)]


def test_pattern_conv_runs_with_a_library_extracted_from_the_model():
    lib = PatternLibrary.from_taps([(0, 1, 3, 4), (4, 5, 7, 8), (1, 4, 7, 8)])
    conv = torch.nn.Conv2d(8, 8, 3, padding=1)
    w = project_pattern_connectivity(conv.weight.detach().numpy(), lib, 2.0)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w))
    report = []
    assert_matches_torch(conv, torch.randn(1, 8, 10, 10), report=report, library=PatternLibrary.extract(w, 3, 4))
    assert report[0].rewritten
    report = []
    assert_matches_torch(conv, torch.randn(1, 8, 10, 10), report=report)  # no library: the weight's own found
    assert report[0].rewritten and report[0].reason.startswith("3x4 patterns")
    report = []
    assert_matches_torch(conv, torch.randn(1, 8, 10, 10), report=report, library=PatternLibrary.patdnn())
    assert not report[0].rewritten and "fit no library pattern" in report[0].reason   # a given library is kept


HOST_POINTS = [(lanes, order) for lanes in x86.isa_of(host()).lanes for order in x86.ORDERS]


@pytest.mark.parametrize("lanes,order", HOST_POINTS)
def test_every_loop_order_and_vector_width_of_the_host_space_matches_torch(lanes, order, tmp_path):
    """Three sampled points of one loop order and vector width (tiles, unroll; filter blocks and
    kernel-list chunks for channels_blocked) on odd channels, batch 2, a cropped width (aligned rows),
    stride 2 and padding 0. A kernel whose padded width is not a multiple of ``lanes`` takes the 8-lane point."""
    model = two_odd_pattern_convs(seed=1)
    x = torch.randn(2, 6, 13, 35)
    mod = tp.from_pytorch(model, x)
    offsets = {"pattern": {"implementation": "offsets"}}
    tasks, _ = extract_tasks(mod, host(), options=offsets)
    assert [t.block for t in tasks] == ["pattern_conv2d"] * 2
    for seed in (1, 2, 3):
        db_dir = tmp_path / str(seed) / target_name(host())
        points = {}
        for t in tasks:
            keys = x86.space_points(Schedule(t.mod), host())
            key = (lanes, order) if (lanes, order) in keys else (x86.VECTOR, order)
            points[t.name] = t.design_space(Schedule(t.mod, seed=seed))[keys.index(key)]
        write_log(db_dir, host(), [(t, points[t.name]) for t in tasks])
        assert tuned_error(model, x, mod, db_dir, options=offsets) < 1e-4, (seed, [str(p.trace) for p in points.values()])


def test_output_rows_are_padded_to_the_vector_width_that_covers_them_with_the_fewest_vectors():
    avx512 = Target({"kind": "llvm", "mcpu": "skylake-avx512"})
    avx2 = Target({"kind": "llvm", "mcpu": "znver1"})
    widths = (5, 7, 8, 9, 14, 28, 56, 112, 224)
    assert [x86.row_lanes(w, avx512) for w in widths] == [8, 8, 8, 16, 16, 16, 16, 16, 16]
    assert [x86.row_lanes(w, avx2) for w in widths] == [8] * len(widths)
    assert x86.row_lanes(56, arm_cpu()) == 8


def test_input_rows_are_aligned_to_the_vector_on_x86_where_an_output_row_holds_two_or_more():
    avx512 = Target({"kind": "llvm", "mcpu": "skylake-avx512"})
    avx2 = Target({"kind": "llvm", "mcpu": "znver1"})
    widths = (7, 8, 9, 14, 16, 17, 28, 56, 224)
    assert [x86.row_alignment(w, (1, 1), avx512) for w in widths] == [0, 0, 0, 0, 0, 16, 16, 16, 16]
    assert [x86.row_alignment(w, (1, 1), avx2) for w in widths] == [0, 0, 8, 8, 8, 8, 8, 8, 8]
    assert x86.row_alignment(56, (2, 1), avx512) == 16 and x86.row_alignment(28, (2, 2), avx512) == 16
    assert x86.row_alignment(14, (2, 2), avx512) == 0 and x86.row_alignment(56, (1, 1), arm_cpu()) == 0


@pytest.mark.parametrize("padding", [(1, 1, 1, 1), (0, 0, 0, 0), (2, 1, 0, 3)])
@pytest.mark.parametrize("width", [17, 28, 40])
@pytest.mark.parametrize("stride_w,align", [(1, 16), (2, 16), (2, 0)])
def test_padded_rows_hold_each_input_column_where_the_taps_read_it_with_zeros_elsewhere(stride_w, align, width, padding):
    """Stride 1, aligned: tap column kw=1 of output column 0 on a vector boundary. Stride 2: even
    columns, then odd ones, so tap column kw of output column w is ``columns[kw] + w``."""
    geom = PatternConvGeometry(2, 3, 5, width, 4, (2, stride_w), padding, vector_width=16, align=align)
    assert geom.row % max(align, 1) == 0
    if stride_w == 1:
        assert (geom.lead + 1) % 16 == 0 and geom.columns == (0, 1, 2) and geom.w_step == 1
    else:
        assert geom.lead == 0 and geom.columns == (0, geom.row // 2, 1) and geom.w_step == 1
    pt, pl = padding[:2]
    data = np.random.default_rng(0).standard_normal((2, 3, 5, width)).astype("float32")
    x = te.placeholder(data.shape, name="x")
    f = tvm.compile(te.create_prim_func([x, padded_input(x, geom)]), "llvm")
    out = tvm.runtime.tensor(np.full((2, geom.pad_size), np.nan, "float32"))
    f(tvm.runtime.tensor(data), out)
    c, y, w = np.meshgrid(range(3), range(5), range(width), indexing="ij")
    col = w + pl
    at = col if stride_w == 1 else (col % 2) * (geom.row // 2) + col // 2
    expected = np.zeros((2, geom.pad_size), "float32")
    expected[:, (geom.lead + c * geom.plane + (y + pt) * geom.row + at).ravel()] = data.reshape(2, -1)
    np.testing.assert_array_equal(out.numpy(), expected)
    ho, _ = geom.out_hw
    last_read = geom.lead + (geom.C - 1) * geom.plane + ((ho - 1) * 2 + 2) * geom.row + geom.out_w_padded - 1 + max(geom.columns)
    assert last_read < geom.pad_size


def test_rows_are_aligned_only_for_width_strides_of_1_and_2():
    with pytest.raises(ValueError, match="aligned input rows need stride 1 or 2 along the width, not 3"):
        PatternConvGeometry(1, 3, 5, 40, 4, (1, 3), vector_width=16, align=16)


def test_an_avx512_cpu_gets_16_lane_tiles_where_the_width_allows_and_8_lanes_elsewhere():
    avx512 = Target({"kind": "llvm", "mcpu": "skylake-avx512"})
    avx2 = Target({"kind": "llvm", "mcpu": "znver1"})
    assert x86.isa_of(avx512) == x86.AVX512 and x86.isa_of(avx2) == x86.AVX2
    conv = pattern_conv(8, 8)
    offsets = {"pattern": {"implementation": "offsets"}}
    for hw, lanes in [(14, 16), (28, 16), (56, 16), (9, 16), (5, 8)]:     # padded widths 16, 32, 64, 16, 8
        mod = tp.from_pytorch(conv, torch.randn(1, 8, hw, hw))
        (task,), _ = extract_tasks(mod, avx512, options=offsets)
        keys = x86.space_points(Schedule(task.mod), avx512)
        assert sorted({k[0] for k in keys}) == sorted({8, lanes}) and len(keys) == len(x86.ORDERS) * len({8, lanes})
        assert x86.default_knobs(hw, x86.padded_width(Schedule(task.mod)), x86.AVX512).lanes == lanes
        asm = tp.build(mod, avx512, options=offsets).mod.imports[0].inspect_source("asm")
        fma = [line for line in asm.splitlines() if "vfmadd231ps" in line]
        register = "%zmm" if lanes == 16 else "%ymm"
        assert sum(register in line for line in fma) >= 8, (hw, len(fma))
        (task2,), _ = extract_tasks(mod, avx2, options=offsets)
        assert [k[0] for k in x86.space_points(Schedule(task2.mod), avx2)] == [8] * len(x86.ORDERS)


@pytest.mark.parametrize("implementation,schedule", [("offsets", x86), ("patterns", by_pattern)])
def test_channel_blocking_knobs_that_do_not_fit_are_refused_by_name(implementation, schedule):
    conv = pattern_conv(8, 8)
    mod = tp.from_pytorch(conv, torch.randn(1, 8, 9, 9))
    (task,), _ = extract_tasks(mod, host(), options={"pattern": {"implementation": implementation}})
    max_len = int(task.constants[3].shape[-2])    # value [K, (P,) max_len, taps]
    with pytest.raises(ValueError, match="needs filter_block and chunks"):
        sch = Schedule(task.mod)
        schedule.apply(sch, sch.get_sblock(task.block), "channels_blocked", x86.Knobs(rows=1, vectors=1))
    with pytest.raises(ValueError, match=f"{max_len + 1} chunks do not divide the kernel lists"):
        sch = Schedule(task.mod)
        schedule.apply(sch, sch.get_sblock(task.block), "channels_blocked",
                       x86.Knobs(rows=1, vectors=1, filter_block=1, chunks=max_len + 1))


def lowered_host_code(mod, target, options) -> str:
    """The TIR of ``tp.build(mod, target)`` right after LowerTVMBuiltin (allocations made explicit)."""
    seen = []

    @tvm.instrument.pass_instrument
    class Capture:
        def run_after_pass(self, module, info):
            if info.name.endswith("LowerTVMBuiltin"):
                seen.append(module.script())

    with tvm.transform.PassContext(opt_level=3, instruments=[Capture()]):
        tp.build(mod, target, options=options)
    return "\n".join(seen)


@pytest.mark.parametrize("implementation", ["offsets", "patterns"])
def test_a_register_tile_under_1kb_is_a_stack_array_not_a_workspace_allocation_per_parallel_task(implementation):
    """A 14x14 output tile (896 bytes): the only workspace allocation is the padded input's, once."""
    mod = tp.from_pytorch(pattern_conv(16, 32), torch.randn(1, 16, 14, 14))
    text = lowered_host_code(mod, host(), {"pattern": {"implementation": implementation}})
    allocations = [line.strip() for line in text.splitlines() if "TVMBackendAllocWorkspace(" in line]
    assert len(allocations) == 1 and allocations[0].startswith("pattern_conv2d_pad"), allocations


def test_host_code_starts_every_function_on_a_64_byte_line():
    """So a kernel's hot loop has the same fetch-line offset JIT-compiled in process and in an
    exported .so (the tuner measures the .so; ``build`` runs the JIT)."""
    conv = pattern_conv(8, 8)
    asm = tp.build(tp.from_pytorch(conv, torch.randn(1, 8, 14, 14)), host()).mod.imports[0].inspect_source("asm")
    lines = asm.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("\t.type") and "@function" in line]
    assert len(starts) >= 3
    assert all(lines[i - 1] == "\t.p2align\t6" for i in starts), [lines[i - 1:i + 1] for i in starts]
