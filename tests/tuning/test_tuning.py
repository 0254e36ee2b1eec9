"""Tuning logs (databases) and the ``tvm-patterns tune`` command: local runner, bad lines, other
targets, Ctrl-C. The RPC tests are in test_tuning_rpc.py."""
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm.s_tir import meta_schedule as ms

import schedules.dense_conv2d_nchw_x86 as dense_conv
from schedules import pattern_conv2d_nchw_x86 as x86
from tvm_patterns import build
from tvm_patterns.targets import host, target_name
from tvm_patterns.tuning import TuningLogError, TuningLogWarning, extract_tasks, load_database
from tvm_patterns.tuning.database import ApplyTuningLog
from tvm_patterns.tuning.database import RECORDS, WORKLOADS, repair_log
from tvm_patterns.tuning.tasks import fused_module

from ..tuning_helpers import OFFSET_TABLE_WIDTH, points_of, record_lines, tiny_model, tuned_error, write_log


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


@pytest.fixture()
def log(tiny, tmp_path):
    """A log of the tiny model's two kernels at their default points (no measuring: 1 ms each)."""
    _, _, mod = tiny
    target = host()
    tasks, _ = extract_tasks(mod, target)
    db_dir = tmp_path / target_name(target)
    for secs in (2e-3, 1e-3):
        write_log(db_dir, target, [(t, t.default_schedule(target)) for t in tasks], secs)
    return db_dir


def test_the_design_spaces_hold_the_default_point_and_the_build_applies_the_records(tiny, log):
    model, x, mod = tiny
    target = host()
    tasks, untunable = extract_tasks(mod, target)
    assert sorted(t.block for t in tasks) == ["conv2d_nchw", "pattern_conv2d"] and not untunable
    for t in tasks:
        spaces = t.design_space(tvm.s_tir.Schedule(t.mod))
        spaces = spaces if isinstance(spaces, list) else [spaces]
        per_point = (len(x86.space_points(tvm.s_tir.Schedule(t.mod), target)) if t.block == "pattern_conv2d"
                     else len(dense_conv.row_vector_widths(OFFSET_TABLE_WIDTH, x86.isa_of(target))))
        assert len(spaces) == per_point   # one per vector width (and loop order)
        default = t.default_schedule(target).trace
        assert any(i.kind.name == "SamplePerfectTile" for i in default.insts)  # fixed decisions of the space
    with target:
        applied = ApplyTuningLog(str(log), target)(fused_module(mod, target))
    scheduled = [gv.name_hint for gv, f in applied.functions_items()
                 if isinstance(f, tvm.tirx.PrimFunc) and f.attrs.get("tirx.is_scheduled")]
    assert sorted(scheduled) == sorted(t.name for t in tasks)
    assert tuned_error(model, x, mod, log.parent) < 1e-4                 # tuning_logs/ root works too


def test_corrupt_and_truncated_lines_are_reported_and_skipped_keeping_the_good_records(log):
    lines = record_lines(log)
    assert len(lines) == 4
    corrupt = lines[:1] + ["{not json at all"] + lines[1:] + [lines[-1][: len(lines[-1]) // 2]]   # + a cut-off line
    (log / RECORDS).write_text("\n".join(corrupt) + "\n")
    with pytest.warns(TuningLogWarning, match=r"line 2: not JSON.*line 6: not JSON"):
        db = load_database(str(log), host())
    assert len(db.get_all_tuning_records()) == 4
    problems = repair_log(str(log), host())                # before tuning appends to it
    assert len(problems) == 2 and len(record_lines(log)) == 4
    assert len((log / (RECORDS + ".rejected")).read_text().splitlines()) == 2
    assert len(ms.database.JSONDatabase(work_dir=str(log)).get_all_tuning_records()) == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_database(str(log), host())


def test_a_workload_line_lost_takes_only_its_own_records(log):
    wl = (log / WORKLOADS).read_text().splitlines()
    (log / WORKLOADS).write_text(wl[0][:40] + "\n" + wl[1] + "\n")
    with pytest.warns(TuningLogWarning, match="workload"):
        db = load_database(str(log), host())
    assert len(db.get_all_tuning_records()) == 2


def test_a_log_tuned_for_another_target_is_refused(tiny, log):
    _, _, mod = tiny
    other = tvm.target.Target({"kind": "llvm", "mcpu": "cascadelake", "num-cores": 2})
    with pytest.raises(TuningLogError, match=rf"tuned for {target_name(host())}, not for this target \(host-cascadelake\)"):
        build(mod, other, tuning_log=str(log))
    with pytest.raises(TuningLogError, match="no tuning log for host-cascadelake"):
        build(mod, other, tuning_log=str(log.parent / "elsewhere"))


def test_a_verified_pick_overrides_records_of_the_search_that_look_faster(tiny, log):
    """The search's best time is biased low (the fastest of many noisy runs); ``best/`` holds the
    pick of the side-by-side re-measurement, and the build takes that one."""
    from tvm_patterns.tuning.verify import _write_best

    _, _, mod = tiny
    target = host()
    db_dir = log
    tasks, _ = extract_tasks(mod, target)
    task = next(t for t in tasks if t.block == "pattern_conv2d")
    lucky = task.design_space(tvm.s_tir.Schedule(task.mod, seed=3))[0]
    write_log(db_dir, target, [(task, lucky)], secs=1e-9)

    def applied_trace():
        loaded = load_database(str(db_dir), target)
        return str(loaded.query_tuning_record(task.mod, target, "main").trace)

    assert applied_trace() == str(lucky.trace)
    default = task.default_schedule(target)
    _write_best(str(db_dir), target, [(task, default, 5e-3)])
    assert applied_trace() == str(default.trace)
    assert tuned_error(*tiny, db_dir) < 1e-4


def test_the_verification_takes_the_searchs_record_of_the_default_point_for_the_default(tiny, tmp_path):
    """The search measures the default point as a record of its design space: another trace text
    than ``default_schedule``'s, the same kernel. Re-measured as a candidate it would be the default
    against itself, and a lucky round would make it a "pick"."""
    from tvm_patterns.tuning.verify import DEFAULTS, _candidates

    _, _, mod = tiny
    target = host()
    tasks, _ = extract_tasks(mod, target)
    task = next(t for t in tasks if t.block == "pattern_conv2d")
    default = task.default_schedule(target)
    spaces = task.design_space(tvm.s_tir.Schedule(task.mod, seed=3))
    ((_, as_searched),) = points_of(spaces, default, task.mod)
    assert str(as_searched.trace) != str(default.trace)
    other = next(s for s in spaces if not tvm_ffi.structural_equal(s.mod, default.mod))
    write_log(tmp_path, target, [(task, as_searched)], secs=1e-4)                    # the fastest record
    write_log(tmp_path, target, [(task, other)], secs=2e-4)
    cands = _candidates(task, target, ms.database.JSONDatabase(work_dir=str(tmp_path)))
    assert len(cands) == DEFAULTS + 1 and tvm_ffi.structural_equal(cands[-1].mod, other.mod)


def test_ctrl_c_during_tuning_keeps_the_records_measured(tmp_path):
    cmd = [sys.executable, "-m", "tvm_patterns.apps.cli", "tune", "--model", "vgg16", "--image-size", "32",
           "--trials", "16", "--log-dir", str(tmp_path)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out, kernels = [], []

    def read():
        for line in p.stdout:
            out.append(line)
            if line.startswith("tuning "):
                kernels.append(int(line.split()[1]))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    db_dir = tmp_path / target_name(host())
    try:
        deadline = time.time() + 150
        while time.time() < deadline and not (kernels and len(record_lines(db_dir)) >= kernels[0]):
            time.sleep(0.2)
        assert kernels, "".join(out)
        os.kill(p.pid, signal.SIGINT)                         # Ctrl-C to the tuning process
        assert p.wait(timeout=150) == 130, "".join(out)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    reader.join(timeout=5)
    assert any("interrupted" in line for line in out), "".join(out)
    n = len(record_lines(db_dir))
    assert n >= kernels[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")                     # no line was left half-written
        assert len(load_database(str(db_dir), host()).get_all_tuning_records()) == n
    shutil.rmtree(tmp_path, ignore_errors=True)


def every_kind_model():
    """A dense first conv, a pattern conv, a block-punched 1x1 conv and a dense linear layer."""
    import torch

    import tvm_patterns as tp
    from tvm_patterns.compress import pattern_prune
    from tvm_patterns.sparsity.block import project_block_punched

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(16, 16, 1), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(16 * 12 * OFFSET_TABLE_WIDTH, 10)).eval()
    pattern_prune(model)
    with torch.no_grad():
        w = model[4].weight
        w.copy_(torch.from_numpy(project_block_punched(w.numpy().reshape(16, 16), 8, 0.75)).reshape(w.shape))
    x = torch.randn(2, 3, 12, OFFSET_TABLE_WIDTH)   # the offset-table pattern kernel
    return model, x, tp.from_pytorch(model, x)


@pytest.mark.parametrize("seed", [1, 2])
def test_random_points_of_every_design_space_build_and_match_torch(seed, tmp_path):
    model, x, mod = every_kind_model()
    target = host()
    tasks, _ = extract_tasks(mod, target)
    assert {"conv2d_nchw", "pattern_conv2d", "block_sparse_conv2d_1x1", "matmul"} <= {t.block for t in tasks}
    points = []
    for t in tasks:
        spaces = t.design_space(tvm.s_tir.Schedule(t.mod, seed=seed))
        spaces = spaces if isinstance(spaces, list) else [spaces]
        points.append((t, spaces[seed % len(spaces)]))          # a sampled point, not the hand schedule
    db_dir = tmp_path / target_name(target)
    write_log(db_dir, target, points)
    assert tuned_error(model, x, mod, db_dir) < 1e-4


def test_the_verification_rotates_each_kernels_candidates_so_none_is_always_measured_first():
    from tvm_patterns.tuning.verify import round_order

    where = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (2, 0)]   # task 1 lost two candidates to build errors
    orders = [round_order(where, r) for r in range(4)]
    for order in orders:
        assert sorted(order) == list(range(len(where)))
        assert [where[n][0] for n in order] == [0, 0, 0, 0, 1, 1, 2]   # a kernel's candidates stay together
    assert [where[o[0]] for o in orders] == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert [where[o[4]] for o in orders] == [(1, 0), (1, 1), (1, 0), (1, 1)]


def test_a_record_is_kept_only_if_it_beats_both_builds_of_the_default_by_five_percent_round_by_round():
    from tvm_patterns.tuning.verify import DEFAULTS, pick

    def rounds(secs):   # the same seconds in three rounds
        return [secs] * 3

    assert DEFAULTS == 2                                       # candidates 0 and 1: the default, built twice
    assert pick({0: rounds(1.00), 1: rounds(0.95), 2: rounds(0.92)}) == 0   # beats the first default by 8%, the copy by 3%
    assert pick({0: rounds(1.00), 1: rounds(1.01), 2: rounds(0.96)}) == 0   # 4% below both: noise here
    assert pick({0: rounds(1.00), 1: rounds(1.01), 2: rounds(0.96), 3: rounds(0.94)}) == 3   # below both by 5%
    assert pick({0: rounds(1.00), 2: rounds(0.90)}) == 2   # the copy failed to run: the one default left
    assert pick({0: rounds(1.00), 1: rounds(0.99)}) == 0   # no record re-measured
    # The machine slows down after the first round: every round the record is 10% faster than both
    # builds of the default, measured beside them, so it is kept.
    assert pick({0: [1.0, 1.5, 1.5], 1: [1.0, 1.5, 1.5], 2: [0.9, 1.35, 1.35]}) == 2
    # A round where the record failed is left out of its comparisons, not counted as a loss.
    assert pick({0: [1.0, 1.0, 1.0], 1: [1.0, 1.0, 1.0], 2: [0.9, None, 0.9]}) == 2
    # No round in which the first default and the record both ran: no comparison, no pick.
    assert pick({0: [1.0, None], 1: [None, 1.0], 2: [None, 0.5]}) == 0


def test_a_paired_speedup_compares_the_samples_of_each_round():
    from tvm_patterns.devices.timing import paired_speedup

    assert paired_speedup([1.0, 2.0, 4.0], [0.5, 1.0, 2.0]) == 2.0
    assert paired_speedup([1.0, 2.0, 1.0], [1.0, None, 0.5]) == 1.5   # the round it failed is left out
    assert paired_speedup([None], [1.0]) is None


def test_every_point_of_a_space_is_a_distinct_kernel_and_the_default_is_one_of_them(tiny):
    from tvm_patterns.tuning.tasks import decision_domains, every_point, replayed, sampled

    _, _, mod = tiny
    target = host()
    tasks, _ = extract_tasks(mod, target)
    task = next(t for t in tasks if t.block == "pattern_conv2d")
    default = task.default_schedule(target)
    spaces = task.design_space(tvm.s_tir.Schedule(task.mod))
    ((n, _),) = points_of(spaces, default, task.mod)
    space = spaces[n]

    def plain(d):
        return [int(x) for x in d] if isinstance(d, (list, tuple, tvm.ir.Array)) else int(d)

    points = [tuple(plain(d) for d in p) for p in every_point(space)]
    assert tuple(plain(d) for _, d in sampled(default.trace)) in points
    for (inst, _), domain in zip(sampled(space.trace), decision_domains(space)):
        if inst.kind.name == "SamplePerfectTile":   # perfect tiles of one extent, innermost within the bound
            assert len({int(np.prod(f)) for f in domain}) == 1 and max(f[-1] for f in domain) <= int(inst.attrs[1])
    kernels = {tvm_ffi.structural_hash(replayed(space, list(p), task.mod).mod) for p in points}
    assert len(kernels) == len(points) > 10


def test_the_in_process_rounds_time_each_kernel_on_its_real_arguments_and_fail_a_broken_one(tiny, tmp_path):
    """Two builds of one kernel (a default and its copy, or two candidates) run on the same buffers."""
    from tvm_patterns.tuning import measure
    from tvm_patterns.tuning.measure import InProcessRounds

    from ..tuning_helpers import FAST, built_defaults

    _, _, mod = tiny
    tasks, inputs, built, runner_inputs = built_defaults(mod, tmp_path, [0, 1, 0])
    broken = ms.runner.RunnerInput(str(tmp_path / "missing.so"), "cpu", runner_inputs[0].args_info)
    rounds = InProcessRounds(measure.TrueArguments(inputs), FAST)
    first, second = rounds([*runner_inputs, broken]), rounds(runner_inputs)
    measure.remove_artifacts(built)
    assert len(tasks) == 2 and len(first) == 4 and first[3] is None
    assert all(s is not None and 0 < s < 1 for s in first[:3] + second)
    assert len(rounds.loaded) == 3                      # each build loaded once
    (_, _, args_a), (_, _, args_b), (_, _, args_again) = (rounds.loaded[str(i.artifact_path)] for i in runner_inputs)
    assert args_again is args_a and args_b is not args_a and len(rounds.arguments) == 2


def test_a_search_on_a_machine_that_slowed_down_is_measured_on_the_speed_the_defaults_had(tiny, tmp_path):
    """Each batch runs between two runs of its task's default point and is rescaled by how much
    slower that default has become; a failed candidate keeps its error, a task without a reference
    is measured as it is."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner.local_runner import LocalRunnerFuture

    from tvm_patterns.tuning import measure
    from tvm_patterns.tuning.database import mean_seconds
    from tvm_patterns.tuning.measure import DriftCorrectedRunner, key

    from ..tuning_helpers import built_defaults

    @derived_object
    class TwiceAsSlow(ms.runner.PyRunner):
        """The real LocalRunner's measurements, doubled: the machine under twice the load. ``seen``:
        the seconds it reported (None: failed)."""

        def __init__(self, runner):
            super().__init__()
            self.runner, self.seen = runner, []

        def run(self, runner_inputs):
            results = [f.result() for f in self.runner.run(runner_inputs)]
            futures = [LocalRunnerFuture(error_message=r.error_msg) if r.error_msg else
                       LocalRunnerFuture(res=[2 * float(s) for s in r.run_secs]) for r in results]
            self.seen += [mean_seconds(f.result().run_secs) if f.result().error_msg is None else None
                          for f in futures]
            return futures

    _, _, mod = tiny
    _, inputs, built, (default, again, other) = built_defaults(mod, tmp_path, [0, 0, 1])
    local = ms.runner.LocalRunner(evaluator_config=ms.runner.EvaluatorConfig(number=5, repeat=5, min_repeat_ms=20),
                                  f_alloc_argument=measure.TrueArguments(inputs))
    before = statistics.median(mean_seconds(f.result().run_secs) for f in local.run([default] * 3))
    broken = ms.runner.RunnerInput(str(tmp_path / "missing.so"), "cpu", default.args_info)
    slowed = TwiceAsSlow(local)
    corrected = DriftCorrectedRunner(slowed, {key(default): (default, before)})
    same, failed = (f.result() for f in corrected.run([again, broken]))
    (unreferenced,) = (f.result() for f in corrected.run([other]))
    measure.remove_artifacts(built)
    # A microsecond kernel's time varies x2 between runs under load, so the doubling itself is not
    # asserted as a bound: what the runner reported is (default, candidate, broken, default, other).
    default_now, candidate, missing, default_after, _ = slowed.seen
    assert missing is None and None not in (default_now, candidate, default_after)
    assert len(corrected.drift) == 1
    assert corrected.drift[0] == pytest.approx((default_now + default_after) / 2 / before, rel=1e-9)
    # the candidate against the default now, on the default's time before: as if side by side
    assert mean_seconds(same.run_secs) == pytest.approx(candidate / corrected.drift[0], rel=1e-9)
    assert failed.error_msg and failed.run_secs is None
    assert unreferenced.error_msg is None and len(corrected.drift) == 1   # no default to bracket it with


def test_local_tuning_verifies_in_this_process_and_the_tuned_build_matches_torch(tiny, tmp_path):
    from ..tuning_helpers import quick_tune

    model, x, mod = tiny
    lines = []
    result = quick_tune(mod, tmp_path, trials=2, out=lines.append)
    assert not result.stopped and not result.interrupted
    assert all(r["verified"] for r in result.rows) and len(result.rows) == 2
    assert all(r["best_ms"] <= r["default_ms"] for r in result.rows)     # a pick beat the default round by round
    assert any(line.startswith("verifying:") and line.endswith("in this process") for line in lines), lines
    assert len(record_lines(os.path.join(result.log_dir, "best"))) == 2
    assert tuned_error(model, x, mod, tmp_path) < 1e-4


def test_a_record_that_is_json_of_the_wrong_shape_is_set_aside_and_does_not_poison_the_log(log):
    lines = record_lines(log)
    (log / RECORDS).write_text("\n".join(lines[:2] + ['[0, {"not": "a record"}]', "[1, [1, 2]]"] + lines[2:]) + "\n")
    problems = repair_log(str(log), host())
    assert len(problems) == 2 and all("skipped" in p for p in problems)
    assert len(record_lines(log)) == 4
    assert len(ms.database.JSONDatabase(work_dir=str(log)).get_all_tuning_records()) == 4   # opens again
