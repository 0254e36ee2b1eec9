"""After the search: re-measure each task's default point and its best few records side by side, and
keep the winner in ``<log>/best/`` (what ``build`` applies).

The search keeps the fastest of many noisy measurements, so its best record is biased low (the
winner's curse): on a 2-core machine a candidate 5% slower than the default often "wins" by a lucky
run. Here the default (twice: two builds of it, ``DEFAULTS``) and the top candidates are measured
again in alternation, ``ROUNDS`` times, and a candidate replaces the default only when it beats
both builds of the default by ``MIN_GAIN`` (``pick``), each compared round by round
(``paired_speedup``: adjacent measurements share the machine's load of the moment).

Where the kernels run (``InProcessRounds`` when the tuning machine is the one tuned for, else
``RunnerRounds`` through the runner): in process, as the network runs them, each kernel loaded once
with its real arguments allocated once and shared by the candidates of one kernel (so that their
ratios are about code, not where buffers landed; docs/design.md#tuning-verify).
"""
from __future__ import annotations

import os
import statistics
import tempfile

import tvm_ffi
from tvm import s_tir
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.arg_info import ArgInfo

from ..devices.timing import paired_speedup
from .measure import InProcessRounds, build_inputs, remove_artifacts
from .database import BEST, RECORDS, WORKLOADS, mean_seconds, read_log

# Candidates re-measured per task, besides the default: the search's ranking is noisy and the gains to
# find are small, so a wider field finds more of them (docs/design.md#tuning-verify).
TOP = 6
ROUNDS = 5          # alternating measurement rounds
# A candidate must beat the default by this fraction: smaller gains did not hold up when measured
# again (docs/design.md#tuning-verify).
MIN_GAIN = 0.05
DEFAULTS = 2        # candidates 0 and 1: the default point, built twice


def _candidates(task, target, database) -> list[s_tir.Schedule]:
    """The default point (``DEFAULTS`` times), then up to TOP other records, best first, each a
    kernel different from the default and from each other (the search's record of the default point
    has another trace text than ``default_schedule``'s, but it is the same kernel)."""
    found = [task.default_schedule(target) for _ in range(DEFAULTS)]
    workload = database.commit_workload(task.mod)
    for rec in database.get_top_k(workload, 4 * TOP):
        if mean_seconds(rec.run_secs) is None:
            continue
        sch = s_tir.Schedule(task.mod)
        rec.trace.apply_to_schedule(sch, remove_postproc=False)
        if any(tvm_ffi.structural_equal(sch.mod, f.mod) for f in found[DEFAULTS - 1:]):
            continue
        found.append(sch)
        if len(found) >= DEFAULTS + TOP:
            break
    return found


def pick(rounds: dict[int, list]) -> int:
    """The candidate to keep from the seconds of those re-measured ({candidate: one per round, None
    where it failed}; the first ``DEFAULTS`` are the default point): the other one that beats every
    build of the default by ``MIN_GAIN`` the most (``paired_speedup``), else 0 (the default)."""
    defaults = [j for j in range(DEFAULTS) if j in rounds]

    def gain(j):   # against the default build it beats least
        speedups = [paired_speedup(rounds[d], rounds[j]) for d in defaults]
        return 0.0 if not speedups or None in speedups else min(speedups)

    best = max((j for j in rounds if j >= DEFAULTS), key=gain, default=0)
    return best if best and defaults and gain(best) * (1 - MIN_GAIN) > 1 else 0


def round_order(where: list[tuple[int, int]], r: int) -> list[int]:
    """Positions in ``where`` ([(task, candidate)], grouped by task) in the order of round ``r``:
    each task's candidates rotated by ``r``, so none is always the first measured after another
    kernel (a fixed order biased the first one; docs/design.md#tuning-verify)."""
    groups: dict[int, list[int]] = {}
    for n, (task, _) in enumerate(where):
        groups.setdefault(task, []).append(n)
    return [g[(r + m) % len(g)] for g in groups.values() for m in range(len(g))]


def verify(tasks, target, builder, measure, database, db_dir: str, device_type: str, out,
           rounds: int = ROUNDS) -> list[dict]:
    """Re-measure and write ``db_dir/best``; returns per task {task, default_ms, verified_ms, pick}
    (verified_ms: the default's median over the pick's speedup; the default's own when it is kept).
    ``measure``: ``InProcessRounds`` or ``RunnerRounds`` (inputs -> seconds or None each)."""
    plans = [(t, _candidates(t, target, database)) for t in tasks]
    flat = [(i, j) for i, (_, cands) in enumerate(plans) for j in range(len(cands))]
    built, inputs, positions = build_inputs(
        builder, [(plans[i][1][j], plans[i][0]) for i, j in flat], target, device_type)
    where = [flat[pos] for pos in positions]
    times: dict[tuple[int, int], list[float | None]] = {k: [None] * rounds for k in where}
    how = "in this process" if isinstance(measure, InProcessRounds) else "through the runner"
    out(f"verifying: {len(inputs)} schedules of {len(tasks)} kernels, {rounds} alternating rounds {how}")
    for r in range(rounds):
        order = round_order(where, r)
        for n, secs in zip(order, measure([inputs[n] for n in order])):
            times[where[n]][r] = secs
    remove_artifacts(built)

    rows, picks = [], []
    for i, (task, cands) in enumerate(plans):
        measured = {j: times[(i, j)] for j in range(len(cands))
                    if any(s is not None for s in times.get((i, j), ()))}
        med = {j: statistics.median(s for s in secs if s is not None) for j, secs in measured.items()}
        if 0 not in med:
            out(f"  {task.name}: the default point could not be re-measured; no verified record")
            continue
        best = pick(measured)
        speedup = {j: paired_speedup(measured[0], measured[j]) or 0.0 for j in measured if j >= DEFAULTS}
        # The pick's time on the default's scale: its median could lie above the default's in rounds
        # the machine was slower, though it beat the default in each round.
        secs = med[0] if best == 0 else med[0] / speedup[best]
        picks.append((task, cands[best], secs))
        rows.append({"task": task.name, "default_ms": med[0] * 1e3, "verified_ms": secs * 1e3,
                     "pick": "default" if best == 0 else f"record {best - DEFAULTS + 1}"})
        again = "".join(f" / {med[j] * 1e3:.3f}" for j in range(1, DEFAULTS) if j in med)
        runner_up = max(speedup, key=speedup.get, default=None)
        kept = "kept" + ("" if runner_up is None else
                         f" (best record {med[runner_up] * 1e3:.3f} ms, x{speedup[runner_up]:.2f})")
        out(f"  {task.name}: default {med[0] * 1e3:.3f}{again} ms, "
            + (kept if best == 0 else f"tuned {secs * 1e3:.3f} ms (x{speedup[best]:.2f})"))
    _write_best(db_dir, target, picks)
    return rows


def _write_best(db_dir: str, target, picks) -> None:
    """Replace the verified records of these kernels in ``db_dir/best``, keeping the others."""
    best_dir = os.path.join(db_dir, BEST)
    with tempfile.TemporaryDirectory(dir=db_dir) as tmp:
        db = ms.database.JSONDatabase(work_dir=tmp)
        mine = [db.commit_workload(task.mod) for task, _, _ in picks]
        if os.path.exists(os.path.join(best_dir, RECORDS)):
            workloads, records, _ = read_log(best_dir)
            for _, index, rec in records:
                old = ms.database.TuningRecord.from_json(rec, workloads[index])
                wl = db.commit_workload(workloads[index].mod)
                if not any(wl.same_as(m) for m in mine):
                    db.commit_tuning_record(ms.database.TuningRecord(
                        old.trace, wl, old.run_secs, old.target, old.args_info))
        for (task, sch, secs), wl in zip(picks, mine):
            db.commit_tuning_record(ms.database.TuningRecord(
                sch.trace, wl, [secs], target, ArgInfo.from_prim_func(task.mod["main"])))
        os.makedirs(best_dir, exist_ok=True)
        for name in (WORKLOADS, RECORDS):
            os.replace(os.path.join(tmp, name), os.path.join(best_dir, name))
