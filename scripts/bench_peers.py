"""Peers side by side: the engines a user would pick instead of ours, on the same dense and compressed
networks, in one process, interleaved, with every output checked against PyTorch.

    python scripts/bench_peers.py --nets vgg16,resnet50,mobilenet_v2 --csv docs/results/peers-CPU.csv
    python scripts/bench_peers.py --make-venvs ...      # first builds ExecuTorch's and DeepSparse's venvs
    python scripts/bench_peers.py --nets vgg16 --engines pytorch,tvm-patterns,deepsparse --filter-block 4 --csv F

Per network: the dense model and the compressed one (the demo's recipe, ``compress_network``: 3x3
convs to PatDNN's 8 patterns at connectivity 3.6, 1x1 convs and linear layers in blocks, 75% sparse)
(``--filter-block F``: also the "filter_block" variant, the same recipe with the 3x3 filters in
blocks of F sharing kernels and patterns) are exported once (ONNX opset 13 by the TorchScript exporter,
and a ``torch.export`` program) and run by PyTorch eager, our TVM dense build, our sparse build, and
every peer that is there: ONNX Runtime and OpenVINO in this process (``pip install -e .[peers]``;
OpenVINO twice, f32 forced and its own default precision, which is bfloat16 on CPUs that have it),
ExecuTorch (XNNPACK) and DeepSparse each in its own venv, in a worker process that times PyTorch
beside it as its yardstick. A peer that is missing or fails is a row with its error.

Int8: our int8 build (``tvm-patterns-int8``, on the compressed variants: ``tp.build(..., int8=ranges)``)
beside ONNX Runtime, OpenVINO and DeepSparse on the model quantized by ONNX Runtime's static
quantization (``onnxruntime-int8``, ``openvino-int8``, ``deepsparse-int8``; ``peers.quantize_onnx``),
all calibrated on the same few random batches; their outputs are checked against float PyTorch within
the demo's int8 tolerance, and timed against float PyTorch.

Rounds in which other processes kept more than 10% of the machine busy are dropped from the medians
(and counted in ``disturbed_rounds``): on 2 cores they slow PyTorch 10-50x. Columns: network, variant,
engine, version, median_ms, p10_ms, p90_ms, speedup_vs_pytorch, max_rel_err, rounds,
disturbed_rounds, cpu, threads, error.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import sys
import tempfile
import time

import numpy as np
import torch
import tvm
from tvm import relax

import tvm_patterns as tp
from tvm_patterns.apps import arguments
from tvm_patterns.apps.demo import CALIBRATION_BATCHES, INT8_TOLERANCE, rel_error
from tvm_patterns.apps.models import compress_network, get_network
from tvm_patterns.apps.report import fmt_table, write_csv
from tvm_patterns.devices import peers
from tvm_patterns.devices.timing import Rounds, cpu_name, measure_rounds, median, percentile, use_threads

COLUMNS = ["network", "variant", "engine", "version", "median_ms", "p10_ms", "p90_ms", "speedup_vs_pytorch",
           "max_rel_err", "rounds", "disturbed_rounds", "cpu", "threads", "error"]
OURS = ("pytorch", "tvm-dense", "tvm-patterns", "tvm-patterns-int8")
TOLERANCE = {"default": 1e-3, "openvino-default": 5e-2}   # bfloat16 keeps 8 bits of mantissa
SPREAD_WARNING = 1.5   # p90 / p10 of PyTorch above this: the baseline itself is not to be trusted


def tolerance(engine: str) -> float:
    return INT8_TOLERANCE if engine.endswith("-int8") else TOLERANCE.get(engine, TOLERANCE["default"])


def calibration_batches(image: int) -> list[torch.Tensor]:
    """The random inputs every int8 engine is calibrated on (ours and ONNX Runtime's quantizer)."""
    g = torch.Generator().manual_seed(1)
    return [torch.randn(1, 3, image, image, generator=g) for _ in range(CALIBRATION_BATCHES)]


def variants(net: str, image: int, filter_block: int = 0):
    """(variant, model) pairs: the dense network and the demo's compressed one; with ``filter_block``
    F, also the network compressed the same way with its 3x3 filters in blocks of F sharing kernels
    and patterns (variant "filter_block")."""
    dense = get_network(net, image)

    def compressed(fb: int):
        model = copy.deepcopy(dense)
        compress_network(model, filter_block=fb)
        return model

    pairs = [("dense", dense), ("compressed", compressed(0))]
    return pairs + [("filter_block", compressed(filter_block))] if filter_block else pairs


def row(net, variant, engine, version, samples=None, ref=None, out=None, yardstick=None, rounds: Rounds | None = None,
        threads=0, error="") -> dict:
    r = {"network": net, "variant": variant, "engine": engine, "version": version, "cpu": cpu_name(),
         "threads": threads, "error": error}
    if samples:
        ms = [s * 1e3 for s in samples]
        r.update(median_ms=median(ms), p10_ms=percentile(ms, 10), p90_ms=percentile(ms, 90),
                 speedup_vs_pytorch=median(yardstick) / median(samples), max_rel_err=rel_error(np.asarray(out, np.float64), ref),
                 rounds=len(samples), disturbed_rounds=len(rounds.disturbed()) if rounds else 0)
        limit = tolerance(engine)
        if not r["max_rel_err"] < limit:
            r["error"] = f"output differs from PyTorch (relative max error {r['max_rel_err']:.1e} >= {limit:g})"
    return r


def in_process(net, variant, model, x, ref, files, engines, rounds, threads, out) -> list[dict]:
    """PyTorch, our builds and the in-process peers, timed in the same rounds."""
    xt = tvm.runtime.tensor(x.numpy())
    fns, versions, outputs, rows = {}, {}, {}, []
    if "pytorch" in engines:
        fns["pytorch"], versions["pytorch"] = (lambda: model(x)), torch.__version__
    mod = tp.from_pytorch(model, x) if {"tvm-dense", "tvm-patterns", "tvm-patterns-int8"} & set(engines) else None
    for name, sparse in (("tvm-dense", False), ("tvm-patterns", True), ("tvm-patterns-int8", True)):
        if name in engines and not (sparse and variant == "dense"):
            t0 = time.perf_counter()
            ranges = tp.calibrate(model, calibration_batches(x.shape[-1])) if name.endswith("-int8") else None
            vm = relax.VirtualMachine(tp.build(mod, tp.targets.host(), sparse=sparse, int8=ranges), tvm.cpu())
            out(f"[{net}/{variant}] built {name} in {time.perf_counter() - t0:.0f} s")
            fns[name], versions[name] = (lambda vm=vm: vm["main"](xt)), f"tvm {tvm.__version__}"
    for name in engines:
        engine = peers.ENGINES.get(name)
        if engine is None or engine.venv_packages:
            continue
        if importlib.util.find_spec(engine.module) is None:
            rows.append(row(net, variant, name, "", threads=threads, error=f"not installed ({engine.install})"))
            continue
        try:
            run = engine.load(files.for_engine(engine), threads)
            versions[name] = engine.version()
            fns[name] = (lambda run=run: run(x.numpy()))
        except Exception as e:  # noqa: BLE001  a peer that fails is a row with its error
            rows.append(row(net, variant, name, "", threads=threads, error=f"{type(e).__name__}: {e}"[:300]))
    with torch.no_grad():
        for name, fn in fns.items():
            result = fn()
            outputs[name] = result.numpy() if hasattr(result, "numpy") else np.asarray(result)
        measured = measure_rounds(fns, rounds=rounds)
    quiet = measured.quiet()
    if measured.disturbed():
        out(f"[{net}/{variant}] {len(measured.disturbed())} of {rounds} rounds disturbed by other processes "
            f"(foreign load {', '.join(f'{s:.0%}' for s in measured.foreign if s is not None)}); "
            + ("dropped" if quiet is not measured.samples else "kept: too few quiet rounds"))
    yard = quiet.get("pytorch") or [float("nan")]
    for name in fns:
        rows.append(row(net, variant, name, versions[name], quiet[name], ref, outputs[name], yard, measured, threads))
    return rows


def in_workers(net, variant, x, ref, files, engines, rounds, threads, workdir) -> list[dict]:
    """The peers with venvs of their own, each in a worker beside its own PyTorch yardstick."""
    rows = []
    for name in engines:
        engine = peers.ENGINES.get(name)
        if engine is None or not engine.venv_packages:
            continue
        if not peers.venv_python(engine).exists():
            rows.append(row(net, variant, name, "", threads=threads,
                            error=f"no venv at {peers.venv_python(engine).parent.parent} (run with --make-venvs)"))
            continue
        try:
            res = peers.run_worker(engine, files, x.numpy(), rounds, threads, workdir)
        except Exception as e:  # noqa: BLE001
            rows.append(row(net, variant, name, "", threads=threads, error=f"{type(e).__name__}: {e}"[:300]))
            continue
        measured = Rounds(res["samples"], res["foreign"])
        quiet = measured.quiet()
        rows.append(row(net, variant, name, res["version"], quiet["engine"], ref, res["output"], quiet["pytorch"],
                        measured, threads))
    return rows


def quantized(files: peers.Files, image: int, out) -> peers.Files:
    """``files`` with the model quantized for the int8 peers; unchanged (and their rows will say why)
    when ONNX Runtime's quantizer is not there or fails."""
    if importlib.util.find_spec("onnxruntime") is None:
        return files
    try:
        return peers.quantize_onnx(files, [b.numpy() for b in calibration_batches(image)])
    except Exception as e:  # noqa: BLE001  the int8 peers' rows carry the error
        out(f"quantizing the ONNX model failed: {type(e).__name__}: {e}")
        return files


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", default="vgg16,resnet50,mobilenet_v2")
    ap.add_argument("--engines", default=",".join([*OURS, *peers.ENGINES]),
                    help="comma-separated, of: " + ", ".join([*OURS, *peers.ENGINES]))
    ap.add_argument("--csv", required=True)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--filter-block", type=int, default=0,
                    help="also a variant whose 3x3 filters are pruned in blocks of this many sharing kernels and patterns")
    ap.add_argument("--make-venvs", action="store_true", help="create the venvs of ExecuTorch and DeepSparse first")
    args = ap.parse_args(argv)
    nets = arguments.networks(ap, args.nets)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in (*OURS, *peers.ENGINES)]
    if not engines or unknown:
        ap.error(f"--engines: {'unknown engine(s) ' + ', '.join(unknown) if unknown else 'no engine given'} "
                 f"(choose from {', '.join([*OURS, *peers.ENGINES])})")
    arguments.at_least(ap, args, 3, "rounds")
    arguments.at_least(ap, args, 1, "threads", "image_size")
    arguments.at_least(ap, args, 0, "filter_block")
    use_threads(args.threads)

    def out(msg):
        print(msg, flush=True)

    if args.make_venvs:
        for name in engines:
            engine = peers.ENGINES.get(name)
            if engine is not None and engine.venv_packages:
                try:
                    peers.make_venv(engine, out=out)
                except Exception as e:  # noqa: BLE001  its rows will say there is no venv
                    out(f"{name}: {e}")
    rows = []
    torch.manual_seed(0)
    for net in nets:
        for variant, model in variants(net, args.image_size, args.filter_block):
            x = torch.randn(1, 3, args.image_size, args.image_size)
            with torch.no_grad():
                ref = model(x).numpy().astype(np.float64)
            with tempfile.TemporaryDirectory(prefix="bench_peers_") as workdir:
                files = peers.export_model(model, x, workdir)
                if any(peers.ENGINES[e].int8 for e in engines if e in peers.ENGINES):
                    files = quantized(files, args.image_size, out)
                rows += in_process(net, variant, model, x, ref, files, engines, args.rounds, args.threads, out)
                rows += in_workers(net, variant, x, ref, files, engines, args.rounds, args.threads, workdir)
            write_csv(args.csv, [{c: r.get(c, "") for c in COLUMNS} for r in rows])
            for r in rows:
                if r["network"] == net and r["variant"] == variant and r["engine"] == "pytorch" and r.get("p10_ms"):
                    if r["p90_ms"] / r["p10_ms"] > SPREAD_WARNING:
                        out(f"[{net}/{variant}] warning: PyTorch's p90/p10 is {r['p90_ms'] / r['p10_ms']:.2f}: "
                            "its speed-ups are not to be trusted (is the machine quiet?)")
    out(fmt_table(rows, ["network", "variant", "engine", "median_ms", "p10_ms", "p90_ms", "speedup_vs_pytorch",
                         "max_rel_err", "disturbed_rounds", "error"]))
    return 1 if any(r["error"] and "differs" in r["error"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
