"""aarch64 NEON: the pattern conv cross-compiled for targets.arm_cpu(), checked as a binary, and run on the
emulated aarch64 RPC device (qemu-user) against PyTorch."""
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

import tvm_patterns as tp

from .test_pattern_conv import pattern_conv, two_odd_pattern_convs

CROSS_CXX = "aarch64-linux-gnu-g++"
OBJDUMP = "aarch64-linux-gnu-objdump"
EM_AARCH64 = 183
FMLA_4S = re.compile(r"\bfmla\s+v\d+\.4s, v\d+\.4s, v\d+\.(?:4s|s\[\d\])")

CASES = {  # name: (batch, cin, cout, height, width, conv kwargs)
    "basic": (1, 16, 32, 14, 14, {}),
    "odd shapes, stride 2": (2, 5, 7, 9, 11, {"stride": 2}),
}


def model_and_input(case):
    n, cin, cout, h, w, kw = CASES[case]
    torch.manual_seed(1)
    return torch.nn.Sequential(pattern_conv(cin, cout, **kw), torch.nn.ReLU()).eval(), torch.randn(n, cin, h, w)


@pytest.fixture(scope="module", params=[(case, impl) for case in CASES for impl in ("offsets", "patterns")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def arm_library(request, tmp_path_factory):
    """(path of the exported aarch64 .so, model, input) of one case and pattern-conv implementation."""
    if shutil.which(CROSS_CXX) is None:
        pytest.fail(f"{CROSS_CXX} is missing: apt-get install g++-aarch64-linux-gnu (.ci/apt-packages.txt)")
    case, implementation = request.param
    model, x = model_and_input(case)
    report = []
    ex = tp.build(tp.from_pytorch(model, x), tp.targets.arm_cpu(), report=report,
                  options={"pattern": {"implementation": implementation}})
    assert [r.kind for r in report] == ["pattern"]
    assert report[0].reason.endswith(f"{implementation} implementation"), report[0].reason
    path = tp.export_library(ex, tmp_path_factory.mktemp("neon") / "pattern_conv_aarch64.so",
                             tp.targets.arm_cpu())
    return path, model, x


def test_library_is_an_aarch64_elf(arm_library):
    header = arm_library[0].read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and header[4] == 2, "not a 64-bit ELF"
    assert int.from_bytes(header[18:20], "little") == EM_AARCH64


def test_hot_loop_uses_neon_fma(arm_library):
    dis = subprocess.run([OBJDUMP, "-d", "--no-show-raw-insn", str(arm_library[0])],
                         capture_output=True, text=True, check=True).stdout
    # The parallel body of the fused conv holds the register tile (symbol "..._compute_").
    bodies = re.split(r"\n(?=[0-9a-f]+ <)", dis)
    conv = [b for b in bodies if re.match(r"[0-9a-f]+ <\w*pattern_conv2d\w*compute_\w*>:", b)]
    assert conv, "no parallel body of the pattern conv in the library"
    fmla = FMLA_4S.findall("\n".join(conv))
    assert len(fmla) >= 8, f"{len(fmla)} NEON 'fmla vN.4s' in the conv's hot loop"


def test_matches_torch_on_the_emulated_aarch64_device(arm_library, arm_device):
    path, model, x = arm_library
    with torch.no_grad():
        ref = model(x).numpy()
    out = arm_device.run_model(path, x.numpy())
    err = np.abs(out - ref).max() / np.abs(ref).max()
    assert err < 1e-4, f"relative max error {err:.2e} on the aarch64 device"


def test_register_tile_fits_the_a76_budget():
    from schedules.pattern_conv2d_nchw_neon import MAX_ACCUMULATORS, default_knobs

    for ho, wp in [(14, 16), (56, 56), (7, 8), (5, 8), (28, 32), (13, 16)]:
        k = default_knobs(ho, wp)
        assert ho % k.rows == 0 and (wp // 4) % k.vectors == 0
        assert k.rows * k.vectors <= MAX_ACCUMULATORS
    assert default_knobs(56, 56).rows * default_knobs(56, 56).vectors > 14   # more than AVX2's budget


def test_sampled_points_of_the_per_pattern_neon_space_match_torch_on_the_emulated_device(arm_device, tmp_path):
    """Three sampled register tiles and unrolls of the per-pattern NEON space, built from a tuning
    log, on odd channels, batch 2, stride 2 and padding 0."""
    from tvm.s_tir import Schedule

    from tvm_patterns.targets import arm_cpu, target_name
    from tvm_patterns.tuning import extract_tasks

    from ..tuning_helpers import write_log

    model = two_odd_pattern_convs(seed=3)
    x = torch.randn(2, 6, 13, 21)
    with torch.no_grad():
        ref = model(x).numpy()
    options = {"pattern": {"implementation": "patterns"}}
    mod = tp.from_pytorch(model, x)
    tasks, _ = extract_tasks(mod, arm_cpu(), options=options)
    assert [t.block for t in tasks] == ["pattern_conv2d_by_pattern"] * 2
    for seed in (1, 2, 3):
        db_dir = tmp_path / str(seed) / target_name(arm_cpu())
        write_log(db_dir, arm_cpu(), [(t, t.design_space(Schedule(t.mod, seed=seed))[0]) for t in tasks])
        ex = tp.build(mod, arm_cpu(), tuning_log=str(db_dir), options=options)
        lib = tp.export_library(ex, tmp_path / f"sampled_{seed}.so", arm_cpu())
        out = arm_device.run_model(lib, x.numpy())
        assert np.abs(out - ref).max() / np.abs(ref).max() < 1e-4, seed
