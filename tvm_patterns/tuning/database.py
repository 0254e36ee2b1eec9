"""Tuning logs: MetaSchedule JSON databases, one directory per target (tuning_logs/<target name>/).

A log is read line by line: a corrupt or truncated line (a tuning run killed mid-write, a bad merge)
is reported and skipped, never costing the good records. A log tuned for another target is refused.
``ApplyTuningLog`` puts the best records in the build pipeline after fusion: kernels with a
(successful) record get its schedule; the others are left to ``ApplySchedules``'s default point.
"""
from __future__ import annotations

import json
import os
import warnings

import tvm
import tvm_ffi
from tvm import relax
from tvm.s_tir import meta_schedule as ms

from ..targets import target_name

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
FAILED = 1e9   # seconds; MetaSchedule stores failed measurements as 1e10
BEST = "best"  # sub-directory with one verified record per kernel (tuning.verify)


class TuningLogError(ValueError):
    """A tuning log that cannot be used (missing, or for another target)."""


class TuningLogWarning(UserWarning):
    """Lines of a tuning log that were skipped."""


def log_dir_for(path: str, target) -> str:
    """The database directory: ``path`` itself when it holds a database, else ``path/<target name>``."""
    if os.path.exists(os.path.join(path, RECORDS)):
        return path
    return os.path.join(path, target_name(target))


def _read_lines(path: str) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        return f.read().decode("utf-8", errors="replace").splitlines()


def read_log(db_dir: str):
    """(workloads by line, [(line number, workload index, record JSON)], problems) of a database."""
    problems: list[str] = []
    workloads = []
    for n, line in enumerate(_read_lines(os.path.join(db_dir, WORKLOADS)), 1):
        try:
            workloads.append(ms.database.Workload.from_json(json.loads(line)))
        except Exception as e:  # noqa: BLE001  any bad line is skipped, whatever the parser says
            workloads.append(None)
            problems.append(f"{WORKLOADS} line {n}: {_why(e)}; skipped")
    records = []
    for n, line in enumerate(_read_lines(os.path.join(db_dir, RECORDS)), 1):
        if not line.strip():
            continue
        try:
            index, rec = json.loads(line)
            if not 0 <= int(index) < len(workloads):
                raise ValueError(f"workload index {index} out of range")
            if workloads[int(index)] is None:
                raise ValueError(f"its workload (line {int(index) + 1}) was unreadable")
            # JSON of the wrong shape would pass the lines above and then break every later tune on
            # this log inside MetaSchedule's database: a record must also parse as one.
            ms.database.TuningRecord.from_json(rec, workloads[int(index)])
            records.append((n, int(index), rec))
        except Exception as e:  # noqa: BLE001
            problems.append(f"{RECORDS} line {n}: {_why(e)}; skipped")
    return workloads, records, problems


def _why(e: Exception) -> str:
    if isinstance(e, json.JSONDecodeError):
        return f"not JSON (truncated or corrupt: {e.msg} at column {e.colno})"
    return f"unreadable ({str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__})"


def record_target_names(records) -> set[str]:
    names = set()
    for _, _, rec in records:
        try:
            names.add(target_name(tvm.target.Target(rec[2])))
        except Exception:  # noqa: BLE001  the record itself is checked when it is loaded
            pass
    return names


def check_target(db_dir: str, records, target) -> None:
    """Refuse a log tuned for another target: its timings (and often its code) do not transfer."""
    ours = target_name(target)
    others = record_target_names(records) - {ours}
    if others:
        raise TuningLogError(
            f"tuning log {db_dir} was tuned for {', '.join(sorted(others))}, not for this target ({ours}); "
            f"tune for it (tvm-patterns tune --target ...) or point tuning_log at tuning_logs/{ours}")


def load_database(path: str, target) -> ms.database.MemoryDatabase:
    """The records of a tuning log as an in-memory database, after skipping bad lines (with a
    ``TuningLogWarning`` naming each) and checking the target. A kernel with a verified record
    (``<log>/best/``, written by ``tune``) gets only that one; the others all their records."""
    db_dir = log_dir_for(path, target)
    if not os.path.exists(os.path.join(db_dir, RECORDS)):
        raise TuningLogError(f"no tuning log for {target_name(target)} in {path} (expected {db_dir}/{RECORDS})")
    db = ms.database.MemoryDatabase()
    problems: list[str] = []
    best_dir = os.path.join(db_dir, BEST)
    verified = _load_into(db, best_dir, target, problems, skip=set()) if os.path.isdir(best_dir) else set()
    _load_into(db, db_dir, target, problems, skip=verified)
    if problems:
        warnings.warn(f"tuning log {db_dir}: " + "; ".join(problems), TuningLogWarning, stacklevel=2)
    return db


def _load_into(db, db_dir: str, target, problems: list[str], skip: set[int]) -> set[int]:
    """Commit the readable records of ``db_dir`` whose workload's structural hash is not in ``skip``;
    returns the hashes of the workloads committed."""
    workloads, records, found = read_log(db_dir)
    problems += [f"{BEST}/{p}" if os.path.basename(db_dir) == BEST else p for p in found]
    check_target(db_dir, records, target)
    committed, hashes = {}, set()
    for n, index, rec in records:
        key = tvm_ffi.structural_hash(workloads[index].mod)
        if key in skip:
            continue
        try:
            record = ms.database.TuningRecord.from_json(rec, workloads[index])
            if index not in committed:
                committed[index] = db.commit_workload(workloads[index].mod)
            db.commit_tuning_record(ms.database.TuningRecord(
                record.trace, committed[index], record.run_secs, record.target, record.args_info))
            hashes.add(key)
        except Exception as e:  # noqa: BLE001
            problems.append(f"{RECORDS} line {n}: {_why(e)}; skipped")
    return hashes


def repair_log(db_dir: str, target) -> list[str]:
    """Before appending to a log: check its target, and move unreadable lines to ``*.rejected``
    files so MetaSchedule's JSONDatabase can open it. Returns the problems found."""
    workloads, records, problems = read_log(db_dir)
    check_target(db_dir, records, target)
    if not problems:
        return []
    wl_lines = _read_lines(os.path.join(db_dir, WORKLOADS))
    rec_lines = _read_lines(os.path.join(db_dir, RECORDS))
    good_wl = [i for i, w in enumerate(workloads) if w is not None]
    renumber = {old: new for new, old in enumerate(good_wl)}
    kept = {n for n, _, _ in records}
    with open(os.path.join(db_dir, RECORDS + ".rejected"), "a") as f:
        f.writelines(line + "\n" for n, line in enumerate(rec_lines, 1) if n not in kept and line.strip())
    with open(os.path.join(db_dir, WORKLOADS + ".rejected"), "a") as f:
        f.writelines(line + "\n" for i, line in enumerate(wl_lines) if i not in renumber)
    _rewrite(os.path.join(db_dir, WORKLOADS), [wl_lines[i] for i in good_wl])
    _rewrite(os.path.join(db_dir, RECORDS),
             [json.dumps([renumber[index], rec]) for _, index, rec in records])
    return problems


def _rewrite(path: str, lines: list[str]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(line + "\n" for line in lines)
    os.replace(tmp, path)


def mean_seconds(run_secs) -> float | None:
    if run_secs is None or len(run_secs) == 0:
        return None
    secs = sum(float(s) for s in run_secs) / len(run_secs)
    return None if secs >= FAILED else secs


def ApplyTuningLog(path: str, target) -> tvm.transform.Pass:   # noqa: N802  (a pass, named like TVM's)
    db = load_database(path, target)   # reads and checks now, so a bad log fails before compiling

    @tvm.transform.module_pass(opt_level=0, name="tvm_patterns.ApplyTuningLog")
    def _pass(mod, _ctx):
        with db:
            return relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)

    return _pass
