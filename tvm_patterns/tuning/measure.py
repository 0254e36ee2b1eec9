"""How a kernel is measured: in MetaSchedule's builder and runner workers, in batches outside the
search, with the machine's drift taken out during it, and side by side for the verification.

``build_artifact``, ``signature`` and ``TrueArguments`` are shipped to the workers by value
(cloudpickle), so a worker never imports tvm_patterns (nor torch): they use only tvm and numpy.

``DriftCorrectedRunner``: a search takes half an hour or more and the machine's speed drifts
meanwhile (a phone throttles as it heats; a shared VM's neighbours come and go). Every batch a task
sends to the runner is measured between two runs of that task's default point, and each candidate's
seconds are divided by the default's slowdown since it was first measured, so records measured far
apart rank as if side by side. It removes drift over minutes, not the noise of one measurement,
which is left to the verification (``docs/design.md#tuning-drift``).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import time

import numpy as np
import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.arg_info import ArgInfo
from tvm.s_tir.meta_schedule.runner.local_runner import LocalRunnerFuture
from tvm.s_tir.meta_schedule.runner.utils import run_evaluator_common
from tvm.support.popen_pool import PopenPoolExecutor

from ..devices.remote import check_tracker, parse_tracker
from ..devices.timing import SETTLE_SECONDS
from .database import mean_seconds


# --- In the workers -------------------------------------------------------------------------

def build_artifact(mod, target, _params):
    """LocalBuilder's f_build without the default's ``import tvm.s_tir.tensor_intrin`` (20-60 s here,
    longer than a build's timeout); our design spaces use no tensor intrinsics."""
    import tvm

    return tvm.tirx.build(mod, target=target)


def signature(args_info) -> str:
    """Key of a kernel's argument list: dtypes and shapes of its tensors (ArgInfo JSON objects)."""
    text = repr([(str(a[1]), tuple(int(x) for x in a[2])) for a in args_info])
    return hashlib.sha1(text.encode()).hexdigest()[:16]


class TrueArguments:
    """``f_alloc_argument`` that gives a kernel its real constant inputs.

    Our kernels read index tables (tap offsets, kernel counts) that are call_tir constants in the
    built model; random data there reads out of bounds. ``path`` is an .npz of arrays named
    ``<signature>/<argument index>``; arguments without an array get uniform random data.
    LocalRunner calls it with (device, args_info, alloc_repeat), RPCRunner with the session first.
    """

    def __init__(self, path: str):
        self.path = path

    def __call__(self, *args):
        device, args_info, alloc_repeat = args[-3:]
        import tvm

        rng = np.random.default_rng(0)
        key = signature(args_info)
        with np.load(self.path) as tables:
            arrays = []
            for i, (_, dtype, shape) in enumerate(args_info):
                name = f"{key}/{i}"
                if name in tables.files:
                    arrays.append(tables[name].astype(dtype))
                else:
                    arrays.append(rng.uniform(-1, 1, size=shape).astype(dtype))
        repeated = []
        for _ in range(alloc_repeat):
            tensors = []
            for a in arrays:
                t = tvm.runtime.empty(a.shape, str(a.dtype), device)
                t.copyfrom(a)
                tensors.append(t)
            repeated.append(tensors)
        return repeated


# --- A batch outside the search ---------------------------------------------------------------

def build_inputs(builder, items, target, device_type: str):
    """Build ``items`` [(schedule, task)]; returns (builder results, runner inputs of the ones that
    built, their positions in ``items``)."""
    built = builder.build([ms.builder.BuilderInput(sch.mod, target) for sch, _ in items])
    inputs, positions = [], []
    for pos, ((_, task), b) in enumerate(zip(items, built)):
        if b.error_msg is None:
            inputs.append(ms.runner.RunnerInput(b.artifact_path, device_type,
                                                ArgInfo.from_prim_func(task.mod["main"])))
            positions.append(pos)
    return built, inputs, positions


def remove_artifacts(built) -> None:
    """Delete the builder's temporary directories."""
    for b in built:
        if b.artifact_path:
            shutil.rmtree(os.path.dirname(b.artifact_path), ignore_errors=True)


# --- Runners: where candidates run, and the search's drift correction -------------------------

def rpc_runner(tracker: str, key: str, session_timeout_sec: int = 30) -> ms.runner.RPCConfig:
    """The runner spec of a device behind an RPC tracker ("HOST:PORT"); ``tune`` adds the inputs."""
    host_, port = parse_tracker(tracker)
    return ms.runner.RPCConfig(tracker_host=host_, tracker_port=port, tracker_key=key,
                               session_timeout_sec=session_timeout_sec)


def is_local(spec) -> bool:
    """Whether the runner spec measures on this machine (the one tuned for)."""
    return spec is None or spec == "local"


def make_runner(spec, inputs: str, evaluator: ms.runner.EvaluatorConfig, timeout_sec: float):
    """The runner of a spec (see ``tune``), giving our kernels their real inputs (``inputs``: an .npz)."""
    alloc = TrueArguments(inputs)
    if is_local(spec):
        return ms.runner.LocalRunner(timeout_sec=timeout_sec, evaluator_config=evaluator, f_alloc_argument=alloc)
    if isinstance(spec, ms.runner.RPCConfig):
        runner = ms.runner.RPCRunner(rpc_config=spec, evaluator_config=evaluator, f_alloc_argument=alloc,
                                     max_workers=1)
        # RPCRunner's worker pool has no time limit and its futures wait without one: a request to
        # a tracker whose server died blocks forever. A pool that kills a worker after the session
        # timeout turns that into a failed measurement ("RPCRunner: Timeout").
        runner._inst.pool.shutdown(wait=False)
        runner._inst.pool = PopenPoolExecutor(max_workers=1, timeout=spec.session_timeout_sec)
        return HealthCheckedRunner(runner, f"{spec.tracker_host}:{spec.tracker_port}", spec.tracker_key)
    if isinstance(spec, ms.runner.Runner):
        return spec            # the caller's own runner: it must give our kernels real index tables
    raise TypeError(f"runner must be None, 'local', an RPCConfig (see rpc_runner) or a Runner, not {spec!r}")


@derived_object
class HealthCheckedRunner(ms.runner.PyRunner):
    """``runner`` (an RPC runner), asking the tracker first whether the device is still there: a batch
    sent to a dead device fails at once instead of each candidate waiting out the session timeout."""

    def __init__(self, runner, tracker: str, key: str):
        super().__init__()
        self.runner, self.tracker, self.key = runner, tracker, key

    def run(self, runner_inputs):
        try:
            check_tracker(self.tracker, self.key)
        except (OSError, RuntimeError) as e:   # ConnectionError is an OSError
            return [LocalRunnerFuture(error_message=f"device gone: {e}") for _ in runner_inputs]
        return self.runner.run(runner_inputs)


def key(runner_input) -> str:
    """The task a runner input belongs to, by its argument list (``signature``): tasks with
    the same one share a reference, as they share their inputs in ``TrueArguments``."""
    return signature([a.as_json() for a in runner_input.args_info])


@derived_object
class DriftCorrectedRunner(ms.runner.PyRunner):
    """``runner``, with each batch bracketed by the default point of its task and rescaled.

    references: {``key``: (the default's runner input, its seconds measured before the search)};
    a batch of a task without one (its default failed) is measured as it is. ``drift`` holds each
    batch's factor (default now / default then), for the progress line and the tests."""

    def __init__(self, runner, references: dict):
        super().__init__()
        self.runner, self.references, self.drift = runner, references, []

    def run(self, runner_inputs):
        ref = self.references.get(key(runner_inputs[0])) if runner_inputs else None
        if ref is None:
            return self.runner.run(runner_inputs)
        default, then = ref
        results = [f.result() for f in self.runner.run([default, *runner_inputs, default])]
        now = [mean_seconds(r.run_secs) for r in (results[0], results[-1]) if r.error_msg is None]
        now = [s for s in now if s is not None]
        factor = statistics.mean(now) / then if now else 1.0
        self.drift.append(factor)
        return [LocalRunnerFuture(error_message=r.error_msg) if r.error_msg is not None else
                LocalRunnerFuture(res=[float(s) / factor for s in r.run_secs])
                for r in results[1:-1]]


# --- Side by side, for the verification -----------------------------------------------------

class RunnerRounds:
    """Each measurement one request to the runner (a device behind the RPC tracker, or a caller's own
    runner): seconds, or None where it failed."""

    def __init__(self, runner):
        self.runner = runner

    def __call__(self, inputs) -> list[float | None]:
        results = [fut.result() for fut in self.runner.run(inputs)]
        return [mean_seconds(r.run_secs) if r.error_msg is None else None for r in results]


class InProcessRounds:
    """Each kernel loaded into this process once, with its real arguments (``alloc``, the runner's
    ``f_alloc_argument``) allocated once, then timed in every round as LocalRunner times it
    (``run_evaluator_common`` with ``evaluator``)."""

    def __init__(self, alloc, evaluator):
        self.alloc, self.evaluator, self.loaded, self.arguments = alloc, evaluator, {}, {}

    def _loaded(self, inp):
        """(module, device, [arguments]) of a runner input, loaded on first use. Kernels with the
        same argument list (the candidates of one task) share one set of arguments."""
        key = str(inp.artifact_path)
        if key not in self.loaded:
            dev = tvm.runtime.device(str(inp.device_type), 0)
            info = tuple(a.as_json() for a in inp.args_info)
            where = (str(inp.device_type), repr(info))
            if where not in self.arguments:
                self.arguments[where] = self.alloc(dev, info, 1)
            self.loaded[key] = (tvm.runtime.load_module(key), dev, self.arguments[where])
        return self.loaded[key]

    def __call__(self, inputs) -> list[float | None]:
        secs = []
        for inp in inputs:
            try:
                mod, dev, args = self._loaded(inp)
                time.sleep(SETTLE_SECONDS)
                secs.append(mean_seconds(run_evaluator_common(mod, dev, self.evaluator, args)))
            except Exception:  # noqa: BLE001  a kernel that fails here is not picked
                secs.append(None)
        return secs
