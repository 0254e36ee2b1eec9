"""scripts/arm_throughput.py: the hot loop found in aarch64 assembly, and llvm-mca's figures for a
real NEON kernel of ours and the dense baseline."""
import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "arm_throughput.py"
LISTING = """\
\t.type\tkernel,@function
kernel:
\tmov\tx0, xzr
.LBB0_1:
\tmov\tx1, xzr
.LBB0_2:
\tldr\tq0, [x2]
\tfmla\tv1.4s, v0.4s, v2.s[0]
\tfmla\tv3.4s, v0.4s, v2.s[1]
\tadd\tx1, x1, #1
\tcmp\tx1, #8
\tb.ne\t.LBB0_2
\tfmla\tv4.4s, v0.4s, v2.s[2]
\tadd\tx0, x0, #1
\tcbnz\tx0, .LBB0_1
\tret
.Lfunc_end0:
\t.size\tkernel, .Lfunc_end0-kernel
"""


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("arm_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_hot_loop_is_the_innermost_loop_not_the_one_around_it(script):
    lines = script.functions(LISTING)["kernel"]
    loop = script.hot_loop(lines)
    assert [l.split()[0] for l in loop] == ["ldr", "fmla", "fmla", "add", "cmp", "b.ne"]


def test_a_layer_of_ours_and_the_dense_baseline_get_llvm_mca_figures(script, tmp_path):
    path = tmp_path / "arm.csv"
    assert script.main(["--net", "vgg16", "--image-size", "32", "--layers", "0.2", "--csv", str(path)]) == 0
    rows = path.read_text().splitlines()
    header = rows[0].split(",")
    table = [dict(zip(header, r.split(","))) for r in rows[1:]]
    assert [r["build"] for r in table] == ["ours", "dense"]
    for r in table:
        assert int(r["fmla"]) > 0 and float(r["cycles_per_iteration"]) > 0
        assert 0 < float(r["fma_utilisation"]) <= 1 and float(r["peak_gflops"]) == pytest.approx(16 * 2.4)


def test_filter_block_layers_get_the_kernel_that_loads_an_input_vector_per_four_fmla(script, tmp_path):
    path = tmp_path / "arm.csv"
    assert script.main(["--net", "vgg16", "--image-size", "32", "--layers", "0.2", "--filter-block", "4",
                        "--csv", str(path)]) == 0
    rows = path.read_text().splitlines()
    ours = dict(zip(rows[0].split(","), rows[1].split(",")))
    assert ours["build"] == "ours" and ours["kind"] == "filter_block"
    assert int(ours["loads"]) <= 0.5 * int(ours["fmla"]), ours


def test_the_int8_build_of_a_filter_block_layer_counts_sdot_at_32_ops_each(script, tmp_path):
    path = tmp_path / "arm.csv"
    assert script.main(["--net", "vgg16", "--image-size", "32", "--layers", "0.2", "--filter-block", "4", "--int8",
                        "--csv", str(path)]) == 0
    rows = path.read_text().splitlines()
    table = [dict(zip(rows[0].split(","), r.split(","))) for r in rows[1:]]
    int8 = next(r for r in table if r["build"] == "int8")
    assert int8["kind"] == "int8_filter_block" and int(int8["sdot"]) >= 8 and int8["fmla"] == ""
    assert float(int8["peak_gflops"]) == pytest.approx(64 * 2.4)
    assert float(int8["predicted_gflops"]) == pytest.approx(int(int8["sdot"]) * 32 / float(int8["cycles_per_iteration"])
                                                            * 2.4)


@pytest.mark.parametrize("args,message", [
    (["--filter-block", "-1"], "--filter-block must be >= 0"),
    (["--int8"], "--int8 runs the filter-block int8 kernel: give --filter-block F too"),
    (["--clock-ghz", "0"], "--clock-ghz must be > 0"),
    (["--model", "cortex-a99"], "--model: llvm-mca has no aarch64 CPU 'cortex-a99'"),
    (["--layers", "0.2,9.9"], "--layers: no 3x3 conv 9.9 in vgg16"),
])
def test_a_bad_argument_is_a_usage_error_naming_it(script, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        script.main([*args, "--csv", str(tmp_path / "arm.csv")])
    assert e.value.code == 2 and message in capsys.readouterr().err
