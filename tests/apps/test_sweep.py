"""The latency sweep, end to end on a tiny network: CSV rows, failed configurations, resume, plots."""
import csv

from tvm_patterns.apps import sweep


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_sweep_writes_rows_keeps_going_after_a_failed_configuration_and_resumes(tmp_path, capsys, monkeypatch):
    compress = sweep.compress

    def compress_failing_at_c1_5(model, cfg):          # a configuration that fails while it is measured
        if cfg.connectivity == 1.5:
            raise RuntimeError("this configuration failed")
        return compress(model, cfg)

    monkeypatch.setattr(sweep, "compress", compress_failing_at_c1_5)
    base = ["--nets", "resnet18", "--patterns", "8", "--image-size", "32", "--rounds", "2", "--threads", "1",
            "--out", str(tmp_path)]
    assert sweep.main(base + ["--connectivity", "1.5,2"]) == 0
    rows = read(tmp_path / "sweep.csv")
    assert list(rows[0]) == sweep.COLUMNS
    totals = {r["config"]: r for r in rows if r["layer"] == "TOTAL"}
    assert "this configuration failed" in totals["pattern-p8-c1.5"]["error"]
    ok = totals["pattern-p8-c2"]
    assert ok["error"] == "" and float(ok["ours_ms"]) > 0 and float(ok["mac_ratio"]) > 4 and ok["threads"] == "1"
    layers = [r for r in rows if r["config"] == "pattern-p8-c2" and r["layer"] != "TOTAL"]
    assert {r["layer"] for r in layers} >= {"layers.0.conv1", "layers.7.conv2"}
    assert all(float(r["speedup_vs_tvm_dense"]) > 0 for r in layers)

    capsys.readouterr()
    assert sweep.main(base + ["--connectivity", "1.5,2,3.6"]) == 0
    assert "1 configurations to run (2 already in" in capsys.readouterr().out
    again = read(tmp_path / "sweep.csv")
    assert again[:len(rows)] == rows
    assert [r["config"] for r in again if r["layer"] == "TOTAL"] == ["pattern-p8-c1.5", "pattern-p8-c2", "pattern-p8-c3.6"]

    for name in ("latency_vs_mac.png", "speedup_per_layer.png", "ours_vs_ideal.png"):
        png = (tmp_path / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_sweep_on_the_emulated_aarch64_device_through_the_tracker(tmp_path):
    from tvm_patterns.devices.emulated_arm import EmulatedDevice, RPCTracker

    with RPCTracker() as tracker, EmulatedDevice(tracker=tracker, key="sweep-a76"):
        assert sweep.main(["--nets", "resnet18", "--patterns", "8", "--connectivity", "3.6", "--image-size", "32",
                           "--rounds", "2", "--target", "arm_cpu", "--rpc-tracker", f"127.0.0.1:{tracker.port}",
                           "--rpc-key", "sweep-a76", "--out", str(tmp_path)]) == 0
    [total] = read(tmp_path / "sweep.csv")            # the device gives end-to-end rows only
    assert total["layer"] == "TOTAL" and total["error"] == "", total["error"]
    assert float(total["ours_ms"]) > 0 and float(total["tvm_dense_ms"]) > 0 and float(total["mac_ratio"]) > 4
    assert total["pytorch_ms"] == ""                  # PyTorch does not run on the device
    assert (tmp_path / "latency_vs_mac.png").read_bytes().startswith(b"\x89PNG")


def test_a_device_target_needs_the_tracker(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit):
        sweep.main(["--nets", "resnet18", "--target", "arm_cpu", "--out", str(tmp_path)])
    assert "--target arm_cpu runs on a device: give --rpc-tracker and --rpc-key" in capsys.readouterr().err
