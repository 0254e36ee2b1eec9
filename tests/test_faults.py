"""Bad input and interrupted work: each case gets a clear error naming what is wrong, or keeps the data."""
from __future__ import annotations

import csv
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import tvm_patterns as tp
from tvm_patterns.passes.registry import check_options
from tvm_patterns.apps.report import write_csv
from tvm_patterns.apps.sweep import Config, configurations, is_complete_total, read_rows

ROWS = [{"network": "vgg16", "config": "a", "layer": "TOTAL", "ours_ms": "1.0"},
        {"network": "vgg16", "config": "b", "layer": "TOTAL", "ours_ms": "2.0"}]


def test_a_results_file_survives_a_write_that_runs_out_of_disk(tmp_path):
    path = tmp_path / "results.csv"
    write_csv(str(path), ROWS)
    before = path.read_text()
    code = textwrap.dedent(f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)          # a full disk: writes fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, ({len(before) + 100}, {len(before) + 100}))
        from tvm_patterns.apps.report import write_csv
        try:
            write_csv({str(path)!r}, {ROWS!r} * 1000)
        except OSError as e:
            print("failed:", e.errno)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "failed:" in proc.stdout, proc.stdout + proc.stderr
    assert path.read_text() == before                        # the finished rows are still there
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]   # no temporary file left behind


def test_a_sweep_resumes_only_whole_configurations_and_drops_the_rest(tmp_path):
    path = tmp_path / "sweep.csv"
    header = ["network", "config", "layer", "mac_ratio", "ours_ms", "tvm_dense_ms", "error"]
    lines = [header,
             ["vgg16", "done", "conv1", "8", "1", "2", ""], ["vgg16", "done", "TOTAL", "8", "10", "20", ""],
             ["vgg16", "failed", "TOTAL", "", "", "", "RuntimeError: boom"],
             ["vgg16", "cut", "conv1", "8", "1", "2", ""], ["vgg16", "cut", "TOTAL", "8", "1"]]   # cut short
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(lines)
    rows = read_rows(str(path))
    assert [r["config"] for r in rows] == ["done", "done", "failed", "cut"]        # the short line left out
    assert {r["config"] for r in rows if is_complete_total(r)} == {"done", "failed"}


def test_a_value_repeated_on_a_sweep_axis_is_measured_once():
    assert configurations([8, 8], [3.6, 3.6, 2.0], [0.5, 0.5]) == [
        Config("pattern", 8, 3.6), Config("pattern", 8, 2.0), Config("block", block_sparsity=0.5)]


@pytest.mark.parametrize("args,message", [
    (["--nets", ""], "no network given"),
    (["--nets", "vgg61"], "unknown network"),
    (["--nets", "vgg16", "--patterns", "", "--connectivity", ""], "no configuration"),
])
def test_sweep_arguments_that_would_measure_nothing_end_with_a_usage_error(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "-m", "tvm_patterns.apps.cli", "sweep", "--out", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def tiny():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU()).eval()
    return tp.from_pytorch(model, torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize("options,message", [
    ({"patern": {}}, "unknown sparse kind 'patern' (did you mean 'pattern'?)"),
    ({"pattern": {"max_densty": 0.3}}, "unknown option 'max_densty' (did you mean 'max_density'?)"),
    ({"block": {"block_row": 8}}, "unknown option 'block_row' (did you mean 'block_rows'?)"),
    ({"pattern": 0.3}, "options['pattern'] must be a dict"),
])
def test_a_misspelt_build_option_is_refused_by_name(options, message):
    with pytest.raises(ValueError) as e:
        tp.build(tiny(), options=options)
    assert message in str(e.value)


@pytest.mark.parametrize("options,message", [
    ({"circulant": {"rtol": "tight"}}, "options['circulant']['rtol'] must be a finite number >= 0, got 'tight'"),
    ({"circulant": {"block_candidates": 16}}, "['block_candidates'] must be a non-empty list of integers >= 2, got 16"),
    ({"circulant": {"block_candidates": [16, 1]}}, "['block_candidates'] must be a non-empty list of integers >= 2"),
    ({"column_combine": {"group_candidates": []}}, "['group_candidates'] must be a non-empty list of integers >= 2"),
    ({"column_combine": {"max_gather_rows": 2.5}}, "['max_gather_rows'] must be an integer >= 0, got 2.5"),
    ({"block": {"block_rows": True}}, "options['block']['block_rows'] must be an integer >= 1, got True"),
    ({"block": {"max_density": float("nan")}}, "['max_density'] must be a finite number >= 0, got nan"),
    ({"int8_block": {"conv1x1": "yes"}}, "options['int8_block']['conv1x1'] must be True, False or 'chained', got 'yes'"),
    ({"int8_block": {"unchained": 5}}, "options['int8_block']['unchained'] must be a list of layer names"),
    ({"int8_filter_block": {"filters": 0}}, "options['int8_filter_block']['filters'] must be an integer >= 1, got 0"),
])
def test_a_build_option_of_the_wrong_value_is_refused_by_name_before_any_layer(options, message):
    with pytest.raises(ValueError) as e:
        tp.build(tiny(), options=options)
    assert message in str(e.value)


def test_numpy_option_values_are_taken_as_the_python_numbers_they_hold():
    checked = check_options({"block": {"block_rows": np.int64(8), "max_density": np.float32(0.25),
                                       "block_rows_candidates": np.array([8, 4])},
                             "circulant": {"block_candidates": range(16, 3, -4)}})
    assert checked == {"block": {"block_rows": 8, "max_density": 0.25, "block_rows_candidates": (8, 4)},
                       "circulant": {"block_candidates": (16, 12, 8, 4)}}
    assert type(checked["block"]["block_rows"]) is int and type(checked["block"]["max_density"]) is float
    assert tp.build(tiny(), options={"block": {"block_rows": np.int64(8)}}) is not None


@pytest.mark.parametrize("target", ["host", "llvm", {"kind": "llvm"}])
def test_a_target_may_be_a_preset_name_a_string_or_a_dict(target):
    assert tp.build(tiny(), target) is not None


def test_a_target_that_is_no_target_is_refused_by_name():
    with pytest.raises(ValueError, match="target 'lvm' is not a TVM target"):
        tp.build(tiny(), "lvm")


def test_an_empty_input_is_refused_before_any_pass():
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((0, 3, 8, 8), "float32"))
    with bb.function("main", [x]):
        bb.emit_func_output(x)
    empty = bb.get()
    with pytest.raises(ValueError, match=r"input 'x' has shape \[0, 3, 8, 8\]: a dimension of 0"):
        tp.build(empty)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_a_model_in_another_float_dtype_is_refused_naming_the_weight_and_dtype(dtype):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)).to(dtype)
    with pytest.raises(ValueError, match=rf"weight '0.weight' is {dtype}: only float32 .* model.float\(\)"):
        tp.from_pytorch(model, torch.randn(1, 3, 8, 8, dtype=dtype))


def test_a_float64_input_to_a_float32_model_is_refused():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    with pytest.raises(ValueError, match="input 0 is torch.float64"):
        tp.from_pytorch(model, torch.randn(1, 3, 8, 8, dtype=torch.float64))


@pytest.mark.parametrize("sparsity", [0.99, 0.999])
def test_a_block_sparsity_near_one_keeps_one_column_per_block_not_zero(sparsity):
    import numpy as np

    from tvm_patterns.sparsity.block import project_block_punched

    w = np.random.default_rng(0).standard_normal((16, 20)).astype("float32")
    p = project_block_punched(w, 8, sparsity)
    kept_columns = [(np.abs(p[r:r + 8]).sum(axis=0) > 0).sum() for r in (0, 8)]
    assert kept_columns == [1, 1]


# ---------------------------------------------------------------- the command line

def run_cli(args, capsys) -> tuple[int, str]:
    """(exit status, stderr) of ``tvm-patterns ARGS`` run in this process."""
    from tvm_patterns.apps import cli

    try:
        code = cli.main(args)
    except SystemExit as e:          # argparse's usage errors
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["sweep", "--patterns", "4.5"], "a pattern count is an integer in 1..126 (4 of 9 taps), got 4.5"),
    (["sweep", "--patterns", "200"], "a pattern count is an integer in 1..126"),
    (["sweep", "--connectivity", "0.5"], "connectivity rate must be a finite number >= 1 (keep 1 kernel in rate), got 0.5"),
    (["sweep", "--connectivity", "inf"], "a finite number >= 1"),
    (["sweep", "--block-sparsity", "1"], "block sparsity is in [0, 1), got 1"),
    (["sweep", "--rounds", "0"], "--rounds must be >= 1, got 0"),
    (["demo", "--threads", "0"], "--threads must be >= 1, got 0"),
    (["demo", "--nets", "vgg16,resnet81"], "unknown network(s) resnet81"),
    (["demo", "--sparsity", "1"], "--sparsity must be in [0, 1), got 1.0"),
    (["demo", "--filter-block", "-1"], "--filter-block must be >= 0, got -1"),
    (["demo", "--sparsity", "-0.1"], "--sparsity must be in [0, 1), got -0.1"),
    (["tune", "--trials", "0"], "--trials must be >= 1, got 0"),
    (["tune", "--connectivity", "0"], "'--connectivity': connectivity rate must be a finite number >= 1 (keep 1 kernel in rate), got 0.0"),
    (["build", "--out", "x.so", "--tuning-log", "/no/such/dir"], "--tuning-log: no directory '/no/such/dir'"),
])
def test_a_bad_value_on_the_command_line_is_a_one_line_usage_error_before_any_work(tmp_path, capsys, args, message):
    if args[0] == "sweep":
        args = [*args, "--out", str(tmp_path), "--nets", "vgg16"]
    code, err = run_cli(args, capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_an_rpc_tracker_nobody_listens_at_is_reported_in_seconds_before_the_model_is_built(capsys):
    import time

    from .tuning_helpers import free_port

    t0 = time.time()
    code, err = run_cli(["tune", "--target", "arm_cpu", "--rpc-tracker", f"127.0.0.1:{free_port()}",
                         "--rpc-key", "phone"], capsys)
    assert code == 2 and "no RPC tracker answers at 127.0.0.1:" in err
    assert time.time() - t0 < 15              # TVM's own connect would retry for a minute


def test_a_device_key_the_tracker_does_not_know_is_reported_with_the_keys_it_knows(capsys):
    from .tuning_helpers import rpc_server, tracker

    with tracker() as (port, _), rpc_server(port, "board-a"):
        code, err = run_cli(["build", "--out", "x.so", "--rpc-tracker", f"127.0.0.1:{port}", "--rpc-key", "board-b"],
                            capsys)
    assert code == 2 and "no RPC server with key 'board-b'" in err and "(registered: board-a)" in err


def test_an_error_inside_a_command_is_one_line_and_verbose_shows_the_traceback(monkeypatch, capsys):
    from tvm_patterns.apps import demo

    def fails(argv):
        raise ValueError("layer 'features.0': something the user can fix\nsecond line")

    monkeypatch.setattr(demo, "main", fails)
    code, err = run_cli(["demo"], capsys)
    assert (code, err) == (2, "tvm-patterns demo: error: layer 'features.0': something the user can fix\n")
    with pytest.raises(ValueError, match="something the user can fix"):
        run_cli(["demo", "--verbose"], capsys)


@pytest.mark.parametrize("arguments,message", [
    ({"trials": 0}, "trials must be an integer >= 1, got 0"),
    ({"trials": 2.5}, "trials must be an integer >= 1, got 2.5"),
    ({"population": -1}, "population must be an integer >= 1"),
    ({"verify_rounds": -1}, "verify_rounds must be an integer >= 0"),
    ({"timeout_sec": 0}, "timeout_sec must be a number of seconds > 0"),
    ({"options": {"pattern": {"max_densty": 0.3}}}, "unknown option 'max_densty' (did you mean 'max_density'?)"),
])
def test_tune_refuses_a_bad_argument_before_any_work(tmp_path, arguments, message):
    with pytest.raises(ValueError) as e:
        tp.tune(tiny(), log_dir=str(tmp_path), **arguments)
    assert message in str(e.value)
    assert not any(tmp_path.iterdir())                  # no log directory made
