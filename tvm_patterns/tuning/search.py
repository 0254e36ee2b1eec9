"""``tune``: MetaSchedule + XGBoost over the design spaces of a model's kernels.

    result = tune(mod, targets.host(), trials=32)                        # LocalRunner
    result = tune(mod, targets.arm_cpu(), trials=64,
                  runner=rpc_runner("192.168.1.2:9190", "rk3399"))      # a board via the RPC tracker
    ex = build(mod, target, tuning_log=result.log_dir)

Every task's hand schedule (the default point of its space) is measured first and stored like any
other record, so the search starts from it; it is measured again around every batch of its task,
whose times are rescaled by its drift (``measure.DriftCorrectedRunner``), so that records measured at any time of the run
compare as if side by side. Records are appended to the log as they are measured:
an interrupted or failed run keeps everything measured so far. At the end the default and the best
records are re-measured side by side (``verify``; in this process when this machine is the one tuned
for): a kernel keeps its default point unless a candidate really beats it, and ``build`` applies
those verified picks.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import types
from dataclasses import dataclass, field

import cloudpickle
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.arg_info import ArgInfo

from ..devices import export
from ..targets import as_target, target_name
from . import measure, verify
from .database import mean_seconds, repair_log
from .measure import DriftCorrectedRunner, is_local, make_runner
from .tasks import Task, extract_tasks, save_constants

for _module in (measure, export):   # workers need not import tvm_patterns (nor torch)
    cloudpickle.register_pickle_by_value(_module)

DEFAULT_LOG_DIR = "tuning_logs"
STOP_AFTER_FAILED_BATCHES = 2   # consecutive batches with no successful measurement end the run


@dataclass
class TuneResult:
    """log_dir: the database written; rows: per task {task, weight, trials, errors, default_ms, best_ms}."""

    log_dir: str
    rows: list = field(default_factory=list)
    interrupted: bool = False
    stopped: str = ""


@contextlib.contextmanager
def _without_tensor_intrin_import():
    """TuneContext imports tvm.s_tir.tensor_intrin (20-60 s on this machine) for tensorizing
    schedule rules; our design spaces have none, so an empty module stands in while contexts
    are made, and is removed again so a later real import works."""
    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        yield
        return
    sys.modules[name] = types.ModuleType(name)
    try:
        yield
    finally:
        if isinstance(sys.modules.get(name), types.ModuleType) and not hasattr(sys.modules[name], "__file__"):
            del sys.modules[name]



def _context(task: Task, target, population: int, seed: int, cores: int) -> ms.TuneContext:
    quiet = logging.getLogger("tvm_patterns.tuning.metaschedule")
    quiet.setLevel(logging.WARNING)
    return ms.TuneContext(
        mod=task.mod, target=target, task_name=task.name, rand_state=seed, num_threads=cores, logger=quiet,
        # The space is hand-written: no generic rules or postprocessors (the llvm ones would rewrite it).
        space_generator=ms.space_generator.ScheduleFn(
            task.design_space, sch_rules=[], postprocs=[], mutator_probs={ms.mutator.MutateTileSize(): 1.0}),
        search_strategy=ms.search_strategy.EvolutionarySearch(
            population_size=population, init_min_unmeasured=min(16, population), genetic_num_iters=2))


def _device_type(target) -> str:
    return "cpu" if target.kind.name in ("llvm", "c") else target.kind.name


def _measure_defaults(tasks, target, builder, runner, database, out):
    """Measure each task's hand schedule and store it as a record. Returns (seconds per task, None
    where it failed; the references of ``DriftCorrectedRunner``; the builds, which the caller
    removes once the search is over)."""
    scheds = [t.default_schedule(target) for t in tasks]
    built, inputs, index = measure.build_inputs(builder, list(zip(scheds, tasks)), target, _device_type(target))
    run = {i: f.result() for i, f in zip(index, runner.run(inputs))}
    by_task = dict(zip(index, inputs))
    secs: list[float | None] = []
    references = {}
    for i, (t, s, b) in enumerate(zip(tasks, scheds, built)):
        result = run.get(i)
        ok = result is not None and result.error_msg is None
        run_secs = [float(x) for x in result.run_secs] if ok else [1e10]
        database.commit_tuning_record(ms.database.TuningRecord(
            s.trace, database.commit_workload(t.mod), run_secs, target, ArgInfo.from_prim_func(t.mod["main"])))
        secs.append(mean_seconds(run_secs))
        if secs[-1] is not None:
            references[measure.key(by_task[i])] = (by_task[i], secs[-1])
        error = b.error_msg or (result.error_msg if result is not None else None)
        out(f"  default point {t.name}: {_ms(secs[-1])}" + (f" ({_first_line(error)})" if error else ""))
    return secs, references, built


class _CtrlC:
    """While tuning, the first Ctrl-C asks to stop after the batch being measured (a
    KeyboardInterrupt raised inside MetaSchedule's C++ threads would abort the process); a
    second one interrupts at once."""

    def __init__(self, out):
        self.out, self.pressed, self.previous = out, False, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True
        self.out("Ctrl-C: stopping after the batch being measured (Ctrl-C again to abort)")

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


class StopTuning(Exception):
    """Raised by the progress callback to end a run whose measurements all fail."""


@derived_object
class _StoppableBuilder(ms.builder.PyBuilder):
    """The LocalBuilder, unless Ctrl-C was pressed: then the run ends before the next batch is
    built (MetaSchedule sends every task's batch before it reports any)."""

    def __init__(self, builder, ctrl_c):
        super().__init__()
        self.builder, self.ctrl_c = builder, ctrl_c

    def build(self, build_inputs):
        if self.ctrl_c.pressed:
            raise StopTuning("interrupted")
        return self.builder.build(build_inputs)


@derived_object
class _Progress(ms.measure_callback.PyMeasureCallback):
    """Prints one line per measured batch with the task's best so far (and the machine's drift,
    ``DriftCorrectedRunner.drift``); stops a run whose runner fails on everything (a device gone,
    a tracker without servers)."""

    def __init__(self, tasks, defaults, trials, out, ctrl_c, drift=()):
        self.tasks, self.trials, self.out, self.ctrl_c, self.drift = tasks, trials, out, ctrl_c, drift
        self.best = list(defaults)
        self.defaults = list(defaults)
        self.done = [0] * len(tasks)
        self.errors = [0] * len(tasks)
        self.failed_batches = 0
        self.exhausted: set[int] = set()
        self.stopped = ""
        self.t0 = time.perf_counter()

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        if not runner_results:   # every point of this task's space is measured: done, not failed
            if task_id not in self.exhausted:
                self.exhausted.add(task_id)
                self.out(f"  {self.tasks[task_id].name}: design space exhausted after {self.done[task_id]} trials")
            return
        ok = 0
        first_error = ""
        for b, r in zip(builder_results, runner_results):
            secs = mean_seconds(r.run_secs) if r.error_msg is None else None
            if secs is None:
                self.errors[task_id] += 1
                first_error = first_error or _first_line(b.error_msg or r.error_msg or "failed")
                continue
            ok += 1
            if self.best[task_id] is None or secs < self.best[task_id]:
                self.best[task_id] = secs
        self.done[task_id] += len(runner_results)
        t, best, default = self.tasks[task_id], self.best[task_id], self.defaults[task_id]
        line = (f"[{time.perf_counter() - self.t0:6.0f} s] {t.name}: {self.done[task_id]}/{self.trials} trials, "
                f"best {_ms(best)} (default {_ms(default)}{_speedup(default, best)})")
        if self.drift:
            line += f", the defaults now x{self.drift[-1]:.2f} of their time before the search"
        if len(runner_results) - ok:
            line += f", {len(runner_results) - ok} failed: {first_error[:120]}"
        self.out(line)
        if self.ctrl_c.pressed:
            raise StopTuning("interrupted")
        self.failed_batches = 0 if ok else self.failed_batches + 1
        if self.failed_batches >= STOP_AFTER_FAILED_BATCHES and not self.stopped:
            self.stopped = (f"stopping: no measurement succeeded in the last {self.failed_batches} batches "
                            f"({first_error[:200]})")
            self.out(self.stopped)
            # terminate_task() from here trips the scheduler's own bookkeeping; an exception ends
            # the run (the records of this batch were already committed by AddToDatabase).
            raise StopTuning(self.stopped)


def _first_line(error: str) -> str:
    lines = [x for x in str(error).strip().splitlines() if x.strip()]
    return (lines[-1] if lines else "failed")[:300]


def _ms(secs) -> str:
    return "   failed" if secs is None else f"{secs * 1e3:7.3f} ms"


def _speedup(default, best) -> str:
    return "" if default is None or best is None else f", x{default / best:.2f}"


def check_counts(**values) -> None:
    """The numeric arguments of ``tune`` in range, before any work: ValueError names the first not."""
    minimum = {"verify_rounds": 0}
    for name, value in values.items():
        if name == "timeout_sec":
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"timeout_sec must be a number of seconds > 0, got {value!r}")
        elif value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                    or value < minimum.get(name, 1)):
            raise ValueError(f"{name} must be an integer >= {minimum.get(name, 1)}, got {value!r}")


def tune(mod, target=None, trials: int = 32, runner=None, log_dir: str = DEFAULT_LOG_DIR, *,
         kinds=None, options=None, sparse: bool = True, trials_per_iter: int | None = None,
         population: int = 64, evaluator: ms.runner.EvaluatorConfig | None = None,
         timeout_sec: float = 60.0, seed: int = 1, verify_rounds: int = verify.ROUNDS,
         out=print) -> TuneResult:
    """Tune the kernels of a Relax module (from ``from_pytorch``) for ``target``.

    trials: per task (each distinct kernel; the budget of the whole run is trials x tasks).
    runner: None / "local" (this machine), ``rpc_runner(tracker, key)`` (a device), or a Runner.
    log_dir: the records go to ``log_dir/<target name>/`` (a MetaSchedule JSON database), appended
    to what is there. kinds / options / sparse: as for ``build`` (the same kernels must come out).
    verify_rounds: after the search, the default and the best records of each kernel are measured
    again in this many alternating rounds and the winner goes to ``<log>/best/`` (``verify``).
    """
    check_counts(trials=trials, population=population, trials_per_iter=trials_per_iter,
                 verify_rounds=verify_rounds, timeout_sec=timeout_sec)
    target = as_target(target)
    tasks, untunable = extract_tasks(mod, target, kinds=kinds, options=options, sparse=sparse)
    if not tasks:
        raise ValueError(f"no kernel of this model has a design space for {target_name(target)}")
    db_dir = os.path.join(log_dir, target_name(target))
    os.makedirs(db_dir, exist_ok=True)
    for problem in repair_log(db_dir, target):
        out(f"tuning log {db_dir}: {problem} (kept in *.rejected)")
    per_iter = trials_per_iter or max(1, min(16, trials))
    cores = int(target.attrs.get("num-cores", 0) or os.cpu_count() or 1)
    evaluator = evaluator or ms.runner.EvaluatorConfig(number=3, repeat=3, min_repeat_ms=50)
    out(f"tuning {len(tasks)} kernels for {target_name(target)}, {trials} trials each -> {db_dir}")
    if untunable:
        out(f"  no design space (hand schedule kept): {', '.join(untunable)}")
    result = TuneResult(db_dir)
    with tempfile.TemporaryDirectory(prefix="tvm_patterns_tune_") as tmp:
        inputs = os.path.join(tmp, "inputs.npz")
        save_constants(tasks, inputs)
        # Builds run here (cross-compiled and linked for the device when it is another machine).
        builder = ms.builder.LocalBuilder(max_workers=os.cpu_count() or 1, timeout_sec=timeout_sec,
                                          f_build=measure.build_artifact,
                                          f_export=export.LibraryExport(export.linker_for(target)))
        run = make_runner(runner, inputs, evaluator, timeout_sec)
        database = ms.database.JSONDatabase(work_dir=db_dir)
        total = trials * len(tasks)
        cost_model = ms.cost_model.XGBModel(
            extractor=ms.feature_extractor.PerStoreFeature(), adaptive_training=False, num_tuning_cores=cores,
            num_warmup_samples=max(per_iter, min(100, total // 4)))   # the default 100 would never train
        progress, defaults, verified, default_builds = None, None, {}, []
        ctrl_c = _CtrlC(out)   # entered inside the try, left in its finally
        try:
            ctrl_c.__enter__()
            with _without_tensor_intrin_import():
                contexts = [_context(t, target, population, seed, cores) for t in tasks]
            defaults, references, default_builds = _measure_defaults(tasks, target, builder, run, database, out)
            if ctrl_c.pressed:
                raise KeyboardInterrupt
            if not any(d is not None for d in defaults) and not isinstance(runner, ms.runner.Runner):
                result.stopped = "stopping: the default points could not be measured (is the runner reachable?)"
                out(result.stopped)
            else:
                corrected = DriftCorrectedRunner(run, references)
                progress = _Progress(tasks, defaults, trials, out, ctrl_c, corrected.drift)
                ms.task_scheduler.TaskScheduler.create("gradient").tune(
                    tasks=contexts, task_weights=[float(t.weight) for t in tasks], max_trials_global=total,
                    max_trials_per_task=trials, num_trials_per_iter=per_iter,
                    builder=_StoppableBuilder(builder, ctrl_c), runner=corrected,
                    measure_callbacks=ms.measure_callback.MeasureCallback.create("default") + [progress],
                    database=database, cost_model=cost_model)
                result.stopped = progress.stopped
                if not result.stopped and verify_rounds > 0:
                    side_by_side = (measure.InProcessRounds(measure.TrueArguments(inputs), evaluator)
                                    if is_local(runner) else measure.RunnerRounds(run))
                    verified = {r["task"]: r for r in verify.verify(
                        tasks, target, builder, side_by_side, database, db_dir, _device_type(target), out,
                        rounds=verify_rounds)}
        except KeyboardInterrupt:
            result.interrupted = True
            out(f"interrupted: the records measured so far are kept in {db_dir}")
        except Exception as e:  # noqa: BLE001  exceptions raised in callbacks come back through C++
            if progress is not None and progress.stopped:
                result.stopped = progress.stopped
            elif ctrl_c.pressed or "KeyboardInterrupt" in f"{type(e).__name__}: {e}":
                result.interrupted = True
                out(f"interrupted: the records measured so far are kept in {db_dir}")
            else:
                raise
        finally:
            ctrl_c.__exit__()
            measure.remove_artifacts(default_builds)
            for pool_owner in (builder, run):
                pool = getattr(pool_owner, "pool", None)
                if pool is not None:
                    with contextlib.suppress(Exception):
                        pool.shutdown()
        if defaults is not None:
            best = progress.best if progress else defaults
            for i, t in enumerate(tasks):
                row = {"task": t.name, "weight": t.weight, "trials": progress.done[i] if progress else 0,
                       "errors": progress.errors[i] if progress else 0,
                       "default_ms": None if defaults[i] is None else defaults[i] * 1e3,
                       "best_ms": None if best[i] is None else best[i] * 1e3, "verified": False}
                if t.name in verified:   # the side-by-side re-measurement replaces the search's numbers
                    v = verified[t.name]
                    row.update(default_ms=v["default_ms"], best_ms=v["verified_ms"], verified=True)
                result.rows.append(row)
    _summary(result, out)
    return result


def _summary(result: TuneResult, out) -> None:
    rows = [r for r in result.rows if r["default_ms"] is not None and r["best_ms"] is not None]
    if not rows:
        return
    d = sum(r["default_ms"] * r["weight"] for r in rows)
    b = sum(r["best_ms"] * r["weight"] for r in rows)
    out(f"tuned kernels: {d:.3f} ms at the default points -> {b:.3f} ms tuned (x{d / b:.2f}); "
        f"log: {result.log_dir}")
