"""The engines a user would pick instead of ours, each run on the same ONNX / exported model.

    engine = ENGINES["onnxruntime"]
    run = engine.load(Files(onnx="m.onnx", pt2="m.pt2"), threads=2)    # numpy in, numpy out
    files = quantize_onnx(files, calibration_batches)                  # for the "-int8" engines

The "-int8" engines run the same ONNX model statically quantized by ONNX Runtime's tools (QDQ:
per-channel int8 weights, per-tensor uint8 activations on min/max ranges of the calibration batches
the caller passes, the ones our int8 build calibrates on), as a user of each engine would quantize it.

ONNX Runtime and OpenVINO run in this process (``pip install -e .[peers]``). ExecuTorch and DeepSparse
need other versions of numpy / onnx than ours, so each runs in a venv of its own (``make_venv``), in
a worker process (this file run as a script, ``run_worker``) that times the engine and PyTorch on the
same model in the same rounds: PyTorch is every engine's yardstick, measured beside it.

Only numpy and the engine itself are imported here (torch by the worker and ExecuTorch), so the
worker runs where tvm_patterns is not installed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

if __package__:
    from .timing import measure_rounds
else:   # run as a worker script in a peer's venv: timing.py (standard library only) by its path, and
    # this folder off sys.path, so its modules (export, profiling, ...) shadow nothing the engines import
    import importlib.util

    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    _spec = importlib.util.spec_from_file_location("tvm_patterns_timing", _here / "timing.py")
    _timing = sys.modules["tvm_patterns_timing"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_timing)
    measure_rounds = _timing.measure_rounds

# One venv per engine that needs one (``$TVM_PATTERNS_PEERS_DIR``, else beside the ARM runtime's cache).
VENV_ROOT = Path(os.environ.get("TVM_PATTERNS_PEERS_DIR", Path.home() / ".cache" / "tvm-patterns" / "peers"))


@dataclass(frozen=True)
class Files:
    """One model in the formats the engines read: ONNX (opset 13, IR 7: what DeepSparse 1.8 takes) and
    a ``torch.export`` program (.pt2, what ExecuTorch lowers and the worker's PyTorch yardstick runs)."""

    onnx: str
    pt2: str
    onnx_int8: str = ""   # the ONNX model statically quantized (``quantize_onnx``)

    def for_engine(self, engine: "Engine") -> "Files":
        """What ``engine`` reads: the quantized ONNX model in the place of the float one for an int8 engine."""
        if not engine.int8:
            return self
        if not self.onnx_int8:
            raise ValueError(f"{engine.name} runs the ONNX model quantized by ONNX Runtime's quantizer "
                             "(quantize_onnx), which is not installed or failed")
        return Files(self.onnx_int8, self.pt2)


def export_model(model, x, workdir: str) -> Files:
    """``model`` (a torch module, in eval mode) on input ``x`` written in both formats into ``workdir``."""
    import warnings

    import torch

    files = Files(os.path.join(workdir, "model.onnx"), os.path.join(workdir, "model.pt2"))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")   # the TorchScript exporter is deprecated; DeepSparse 1.8 needs its IR 7
        torch.onnx.export(model, (x,), files.onnx, dynamo=False, opset_version=13,
                          input_names=["input"], output_names=["output"])
        torch.export.save(torch.export.export(model, (x,)), files.pt2)
    return files


def quantize_onnx(files: Files, batches, input_name: str = "input") -> Files:
    """``files`` with ``onnx_int8``: its ONNX model quantized by ONNX Runtime (QDQ, per-channel int8
    weights, uint8 activations on the min/max of ``batches``, a list of numpy inputs), stamped IR 7
    with only the opsets it uses so that DeepSparse 1.8 loads it too."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.left = iter(batches)

        def get_next(self):
            x = next(self.left, None)
            return None if x is None else {input_name: x}

    stem = os.path.splitext(files.onnx)[0]
    inferred, quantized = stem + "-inferred.onnx", stem + "-int8.onnx"
    quant_pre_process(files.onnx, inferred)
    quantize_static(inferred, quantized, Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    model = onnx.load(quantized)
    used = {node.domain for node in model.graph.node} | {""}
    kept = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    model.ir_version = 7
    onnx.save(model, quantized)
    return Files(files.onnx, files.pt2, quantized)


@dataclass(frozen=True)
class Engine:
    name: str                         # the engine column of the results
    module: str                       # what must import for it to run
    load: Callable[[Files, int], Callable[[np.ndarray], np.ndarray]]
    version: Callable[[], str]
    venv_packages: tuple = ()         # non-empty: it runs in a venv of its own with these pip requirements
    install: str = "pip install -e .[peers]"
    int8: bool = False                # runs the quantized ONNX model (``Files.for_engine``)


def _onnxruntime(files: Files, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(files.onnx, opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _openvino(precision: str | None):
    def load(files: Files, threads: int):
        import openvino as ov

        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        compiled = ov.Core().compile_model(files.onnx, "CPU", config)
        request = compiled.create_infer_request()
        return lambda x: request.infer([x])[0].copy()
    return load


def _executorch(files: Files, threads: int):
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    torch.set_num_threads(threads)
    program = to_edge_transform_and_lower(torch.export.load(files.pt2),
                                          partitioner=[XnnpackPartitioner()]).to_executorch()
    pte = str(Path(files.pt2).with_suffix(".pte"))
    with open(pte, "wb") as f:
        program.write_to_file(f)
    method = Runtime.get().load_program(pte).load_method("forward")
    return lambda x: method.execute([torch.from_numpy(x)])[0].numpy()


def _deepsparse(files: Files, threads: int):
    from deepsparse import compile_model

    engine = compile_model(files.onnx, batch_size=1, num_cores=threads)
    return lambda x: engine.run([x])[0]


def _version(module: str) -> Callable[[], str]:
    def version() -> str:
        from importlib import metadata

        return metadata.version(module.replace("_", "-"))
    return version


ENGINES: dict[str, Engine] = {e.name: e for e in [
    Engine("onnxruntime", "onnxruntime", _onnxruntime, _version("onnxruntime")),
    Engine("openvino", "openvino", _openvino("f32"), lambda: _version("openvino")() + " (f32 forced)"),
    Engine("openvino-default", "openvino", _openvino(None),
           lambda: _version("openvino")() + " (its default precision on this CPU)"),
    Engine("executorch", "executorch", _executorch, _version("executorch"),
           venv_packages=("executorch==1.5.1", "torch==2.13.0")),
    # 1.9.0 on PyPI is an end-of-life placeholder that fails to build; 1.8.0 needs numpy 1.x and onnx < 1.15.
    Engine("deepsparse", "deepsparse", _deepsparse, _version("deepsparse"),
           venv_packages=("deepsparse==1.8.0", "numpy==1.26.4", "onnx==1.14.1", "torch==2.13.0")),
]}
# The same engines on the quantized model (OpenVINO at its default precision: int8 where the model's
# QDQ nodes say so, its default for the rest).
ENGINES.update({int8: Engine(int8, ENGINES[name].module, ENGINES[name].load, _version(ENGINES[name].module),
                             ENGINES[name].venv_packages, ENGINES[name].install, int8=True)
                for name, int8 in (("onnxruntime", "onnxruntime-int8"), ("openvino-default", "openvino-int8"),
                                   ("deepsparse", "deepsparse-int8"))})


def venv_python(engine: Engine, root: Path = VENV_ROOT) -> Path:
    return root / engine.module / "bin" / "python"   # the int8 engines share their float twin's venv


def make_venv(engine: Engine, root: Path = VENV_ROOT, out=print) -> Path:
    """Create (or complete) the engine's own venv; raises ``RuntimeError`` with pip's last lines."""
    python = venv_python(engine, root)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(python.parent.parent)], check=True)
    out(f"installing {', '.join(engine.venv_packages)} into {python.parent.parent}")
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", *engine.venv_packages],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(engine.venv_packages)} failed: "
                           + "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:]))
    return python


def run_worker(engine: Engine, files: Files, x: np.ndarray, rounds: int, threads: int, workdir: str,
               python: str | None = None, timeout: float = 1800) -> dict:
    """Time ``engine`` and PyTorch on one model in a worker process (``python``: the engine's venv's by
    default). Returns {version, samples: {engine, pytorch}, foreign, output} or raises
    ``RuntimeError`` with the worker's last lines."""
    python = python or str(venv_python(engine))
    files = files.for_engine(engine)
    inp, out = os.path.join(workdir, "input.npy"), os.path.join(workdir, f"{engine.name}.json")
    np.save(inp, x)
    cmd = [python, str(Path(__file__).resolve()), "--engine", engine.name, "--onnx", files.onnx,
           "--pt2", files.pt2, "--input", inp, "--rounds", str(rounds), "--threads", str(threads), "--out", out]
    env = {**os.environ, "NM_DISABLE_ANALYTICS": "1"}   # DeepSparse's usage reporting: no network here
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError("\n".join((proc.stdout + proc.stderr).strip().splitlines()[-3:]))
    with open(out) as f:
        result = json.load(f)
    result["output"] = np.load(result["output"])
    return result


def _worker_main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Time one engine beside PyTorch on one model (in the engine's venv).")
    ap.add_argument("--engine", required=True, choices=sorted(ENGINES))
    for name in ("--onnx", "--pt2", "--input", "--out"):
        ap.add_argument(name, required=True)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    engine = ENGINES[args.engine]
    x = np.load(args.input)
    run = engine.load(Files(args.onnx, args.pt2), args.threads)
    model = torch.export.load(args.pt2).module()
    xt = torch.from_numpy(x)
    with torch.no_grad():
        output = np.asarray(run(x))
        rounds = measure_rounds({"engine": lambda: run(x), "pytorch": lambda: model(xt)}, rounds=args.rounds)
    np.save(args.out + ".npy", output)
    with open(args.out, "w") as f:
        json.dump({"version": engine.version(), "samples": rounds.samples, "foreign": rounds.foreign,
                   "output": args.out + ".npy"}, f)
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main())
