"""scripts/compress_digits.py on a tiny budget: the table, the CSV, and the TVM pattern build."""
import csv
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "compress_digits.py"


@pytest.fixture(scope="module")
def digits():
    spec = importlib.util.spec_from_file_location("compress_digits", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(digits):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # as the script does: more threads only fight over a busy machine
    try:
        return digits.run(digits.QUICK, log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)


def test_quick_run_compresses_three_ways_at_the_promised_rates(quick_run):
    rows, models = quick_run
    by_name = {r.method: r for r in rows}
    assert list(by_name) == ["dense", "oneshot", "admm", "admm_hi"]
    assert by_name["dense"].conv3x3_reduction == 1.0
    # 8 patterns x 4 taps of 9 = 2.25x, times connectivity 3.6 (the first conv: patterns only)
    assert by_name["oneshot"].conv3x3_reduction == by_name["admm"].conv3x3_reduction >= 8.0
    assert by_name["admm_hi"].conv3x3_reduction > 12.0
    assert all(r.test_accuracy > 80.0 for r in rows), rows   # a few epochs already learn digits
    for model in models.values():   # masks squashed: plain weights, no prune hooks left
        assert not any(name.endswith("_orig") for name, _ in model.named_parameters())


def test_main_prints_the_table_and_writes_the_csv(digits, tmp_path, capsys, monkeypatch, quick_run):
    monkeypatch.setattr(digits, "run", lambda budget, tvm_check=False: quick_run)
    path = tmp_path / "digits.csv"
    assert digits.main(["--quick", "--csv", str(path)]) == 0
    out = capsys.readouterr().out
    assert "3x3 reduction" in out and "admm_hi" in out
    with open(path) as f:
        table = list(csv.DictReader(f))
    assert [r["method"] for r in table] == ["dense", "oneshot", "admm", "admm_hi"]
    assert set(table[0]) == {"method", "connectivity", "test_accuracy", "conv3x3_reduction", "seconds"}
    assert float(table[2]["conv3x3_reduction"]) >= 8.0


def test_admm_model_through_the_tvm_pattern_build_gives_the_same_predictions(digits, quick_run):
    rows, models = quick_run
    x = digits.load_digits_16x16()[2]
    n, err, pattern_convs = digits.check_tvm(models["admm"], x, digits.digits_library(models["dense"]))
    assert n == len(x) and err < 1e-4
    assert set(digits.conv3x3_names(models["admm"])[1:]) <= set(pattern_convs)   # the connectivity-pruned ones
