"""scripts/compress_accuracy.py: every method at the promised budgets, the TVM build's accuracy equal
to PyTorch's, and the data sets it reads."""
import csv
import gzip
import importlib.util
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tvm_patterns.apps import datasets

from ..schedules.test_int8_filter_block_conv_avx2 import require_avx2

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "compress_accuracy.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("compress_accuracy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_table(script, tmp_path_factory):
    path = tmp_path_factory.mktemp("accuracy") / "digits.csv"
    assert script.main(["--data", "digits", "--quick", "--nets", "vgg", "--csv", str(path)]) == 0
    with open(path) as f:
        return list(csv.DictReader(f))


def test_every_method_compresses_the_3x3_weights_8x_and_16x(script, quick_table):
    assert list(quick_table[0]) == script.COLUMNS
    assert [(r["method"], r["budget"]) for r in quick_table] == [("dense", "")] + [
        (m, str(b)) for b in (8, 16) for m in script.METHODS]
    assert float(quick_table[0]["reduction_3x3"]) == 1.0
    for r in quick_table[1:]:
        # whole filters come in steps of a filter's share of a layer: the nearest is within 10%
        tolerance = 0.1 if r["method"] == "filter" else 0.05
        assert float(r["reduction_3x3"]) == pytest.approx(float(r["budget"]), rel=tolerance), r
    admm_block = [r for r in quick_table if r["method"] == "admm_block"]
    admm = [r for r in quick_table if r["method"] == "admm"]
    assert all(float(b["reduction_total"]) > float(a["reduction_total"]) for a, b in zip(admm, admm_block))


def test_the_tvm_build_of_every_model_is_as_accurate_as_pytorch_and_rewrites_the_pattern_layers(quick_table):
    for r in quick_table:
        n = 500    # digits' test split has 540 images: the first 500
        assert abs(float(r["tvm_accuracy_1k"]) - float(r["torch_accuracy_1k"])) <= 100 / n + 1e-9, r
        if r["method"] in ("oneshot", "admm", "admm_fblock"):
            assert r["tvm_sparse_layers"] == "5", r          # the five 3x3 convs after the stem
        if r["method"] == "admm_block":
            assert r["tvm_sparse_layers"] == "6", r          # and the FC layer


def test_the_int8_build_runs_the_convs_in_int8_with_the_top1_of_pytorch(script, tmp_path):
    require_avx2()                      # the host picks its kernels: VNNI where it has it, else AVX2
    path = tmp_path / "int8.csv"
    assert script.main(["--data", "digits", "--quick", "--nets", "vgg", "--methods", "admm_fblock", "--int8",
                        "--csv", str(path)]) == 0
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == script.COLUMNS + script.INT8_COLUMNS
    # the dense model's convs but the first (too few MACs an element) run as int8 dense convs
    assert [(r["method"], r["tvm_int8_layers"]) for r in rows] == [("dense", "5"), ("admm_fblock", "5"),
                                                                   ("admm_fblock", "5")]
    for r in rows:
        assert float(r["int8_top1_agreement_1k"]) >= 98.0, r       # 500 images: at most 10 apart


@pytest.fixture(scope="module")
def quick_quantization_table(script, tmp_path_factory):
    path = tmp_path_factory.mktemp("accuracy") / "quantization.csv"
    assert script.main(["--data", "digits", "--quick", "--nets", "vgg", "--width", "8", "--table", "quantization",
                        "--csv", str(path)]) == 0
    with open(path) as f:
        return list(csv.DictReader(f))


def test_every_grid_is_reported_alone_and_on_pattern_pruning_at_8x(script, quick_quantization_table):
    rows = quick_quantization_table
    assert list(rows[0]) == script.QUANT_COLUMNS
    grids = [*script.GRIDS.values(), *script.GRIDS_ALONE.values()]
    assert [(r["method"], r["scheme"].split()[0], r["bits"]) for r in rows] == (
        [("dense", "float", "32"), ("admm", "float", "32")]
        + [("quantize", g["scheme"], str(g["bits"])) for g in grids]
        + [("admm", g["scheme"], str(g["bits"])) for g in script.GRIDS.values()])
    by = {(r["method"], r["scheme"], r["bits"]): r for r in rows}
    ratio = lambda m, s, b: float(by[(m, s, b)]["weight_bits_ratio_3x3"])  # noqa: E731
    # 4-bit codes and a scale per channel: a little under 8x; on top of 8x pruning, the indices too
    assert 7 < ratio("quantize", "sp2", "4") < 8
    assert ratio("admm", "sp2", "4") > 4 * ratio("admm", "float", "32") > 4 * 7
    # Term Quantization of 5-bit codes at 4 terms per 8 values stores what uniform 3-bit does
    assert ratio("quantize", "term group=8 terms=4", "5") == pytest.approx(ratio("quantize", "uniform", "3"), rel=0.02)
    for r in rows:
        if r["method"] == "admm":
            assert float(r["reduction_3x3"]) >= 8 * 0.95, r
        n = 500
        assert abs(float(r["tvm_accuracy_1k"]) - float(r["torch_accuracy_1k"])) <= 100 / n + 1e-9, r


def test_the_structured_table_compresses_the_mlp_by_each_structure_and_builds_it_as_accurate(script, tmp_path):
    path = tmp_path / "structured.csv"
    assert script.main(["--data", "digits", "--quick", "--table", "structured", "--csv", str(path)]) == 0
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == script.STRUCT_COLUMNS
    assert [(r["method"], r["budget"]) for r in rows] == [("dense", "")] + [(m, str(p)) for m, p in script.STRUCTURED]
    for r in rows[1:]:
        assert float(r["reduction_layers"]) == pytest.approx(float(r["budget"]), rel=0.05), r
        assert r["tvm_sparse_layers"] == "2", r          # both hidden layers, recognised from their weights
        assert abs(float(r["tvm_accuracy_1k"]) - float(r["torch_accuracy_1k"])) <= 100 / 500 + 1e-9, r


def test_the_structured_table_refuses_a_convolutional_network(script, tmp_path):
    with pytest.raises(SystemExit):
        script.main(["--data", "digits", "--quick", "--table", "structured", "--nets", "vgg", "--csv", str(tmp_path / "x.csv")])


def test_stored_weight_bits_count_values_scales_and_indices(script):
    lib = script.PatternLibrary.patdnn()
    w = np.zeros((2, 4, 3, 3), dtype="float32")
    taps = lib.tap_offsets()[0]
    for k, c in ((0, 0), (0, 3), (1, 2)):                 # three kernels on pattern 0, 4 taps each
        w[k, c, taps[:, 0], taps[:, 1]] = [1, -2, 3, 4]
    index = 3 * (2 + 3) + 2 * 3          # per kernel its channel (2 bits) and pattern (3); per filter a count
    assert script.weight_bits(w, lib, None) == 12 * 32 + index
    assert script.weight_bits(w, lib, {"scheme": "uniform", "bits": 4}) == 12 * 4 + 2 * 32 + index
    dense = np.ones((2, 4, 3, 3), dtype="float32")      # fits no pattern: stored dense
    assert script.weight_bits(dense, lib, {"scheme": "sp2", "bits": 4}) == 72 * 4 + 2 * 32
    # term: 2 channels x ceil(36 / 8) groups x 2 terms x (sign + 2 exponent bits + 3 position bits) + scales
    assert script.weight_bits(dense, lib, {"scheme": "term", "bits": 5, "group": 8, "terms": 2}) == 2 * (5 * 2 * 6 + 32)


def test_filter_pruning_removes_whole_filters_and_the_input_channels_they_fed(script):
    torch.manual_seed(0)
    model = script.vgg_style(8)
    masks = script.filter_masks(model, 0.5)
    modules = dict(model.named_modules())
    for producer, consumer in script.filter_pairs(model):
        kept = masks[producer].flatten(1).any(1)
        assert int(kept.sum()) == modules[producer].out_channels // 2
        assert bool((masks[producer][~kept] == 0).all())
        if consumer is not None:
            assert bool((masks[consumer][:, ~kept] == 0).all())


def test_filter_pruning_in_a_residual_network_keeps_the_residual_stream(script):
    pairs = script.filter_pairs(script.ResNetStyle(8))
    assert pairs and all(p.endswith("conv1") and c == p.replace("conv1", "conv2") for p, c in pairs)


def test_unstructured_pruning_keeps_the_largest_weights_of_each_layer(script):
    torch.manual_seed(0)
    model = script.vgg_style(8)
    for name, mask in script.unstructured_masks(model, 0.25).items():
        w = dict(model.named_modules())[name].weight.detach().abs()
        assert int(mask.sum()) == round(0.25 * w.numel())
        assert w[mask == 1].min() >= w[mask == 0].max()


def test_fashion_mnist_loads_standardised_with_a_class_balanced_training_subset():
    xtr, ytr, xte, yte = datasets.fashion_mnist(train_limit=200)
    assert xtr.shape == (200, 1, 28, 28) and xte.shape == (10000, 1, 28, 28)
    assert torch.bincount(ytr).tolist() == [20] * 10
    assert abs(float(xtr.mean())) < 1e-4 and abs(float(xtr.std()) - 1) < 1e-3
    assert xtr.dtype == torch.float32 and ytr.dtype == torch.int64


def test_fashion_mnist_missing_names_the_debian_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        datasets.fashion_mnist(root=str(tmp_path))


def test_a_truncated_idx_file_is_refused_by_name(tmp_path):
    path = tmp_path / "images.gz"
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBB3I", 0, 0x08, 3, 10, 28, 28) + bytes(100))
    with pytest.raises(ValueError, match=r"images.gz: 100 values where the header says \(10, 28, 28\)"):
        datasets.read_idx(str(path))
    np.testing.assert_array_equal(datasets.read_idx(str(write_idx(tmp_path, np.arange(6, dtype=np.uint8)))),
                                  np.arange(6))


def write_idx(tmp_path, array: np.ndarray) -> Path:
    path = tmp_path / "ok.gz"
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
                + array.tobytes())
    return path


@pytest.mark.parametrize("args,message", [
    (["--nets", "vgg,alexnet"], "--nets: unknown alexnet (choose from vgg, resnet, mlp)"),
    (["--methods", ""], "--methods: none given"),
    (["--methods", "admm,magic"], "--methods: unknown magic"),
    (["--width", "0"], "--width must be >= 1, got 0"),
])
def test_a_bad_argument_is_a_usage_error_naming_it(script, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        script.main([*args, "--csv", str(tmp_path / "acc.csv")])
    assert e.value.code == 2 and message in capsys.readouterr().err
