"""``ApplyTuningLog``: the best records of a tuning log, in the build pipeline after fusion.

Kernels with a (successful) record get its schedule and are marked scheduled; the others are left
to ``ApplySchedules``, i.e. the default point of their design space.
"""
from __future__ import annotations

import tvm
from tvm import relax

from .database import load_database


def ApplyTuningLog(path: str, target) -> tvm.transform.Pass:   # noqa: N802  (a pass, named like TVM's)
    db = load_database(path, target)   # reads and checks now, so a bad log fails before compiling

    @tvm.transform.module_pass(opt_level=0, name="tvm_patterns.ApplyTuningLog")
    def _pass(mod, _ctx):
        with db:
            return relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)

    return _pass
