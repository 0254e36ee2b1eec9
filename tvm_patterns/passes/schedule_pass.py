"""Apply our hand-written schedules to the PrimFuncs of a Relax module (after FuseOps/FuseTIR).

A PrimFunc is scheduled by the registered schedule of the first of its blocks that has one for the
target (``schedules.registry``); PrimFuncs already scheduled (e.g. from a tuning database) are kept.
"""
from __future__ import annotations

import logging

import tvm
from tvm import s_tir

import schedules  # noqa: F401  (registers every schedule)
from schedules.registry import FALLBACK, find_schedule

log = logging.getLogger("tvm_patterns")

SCHEDULED_ATTR = "tirx.is_scheduled"


def schedule_primfunc(func: tvm.tirx.PrimFunc, target) -> tvm.tirx.PrimFunc | None:
    """The scheduled function, or None when none of its blocks has a schedule for the target."""
    sch = s_tir.Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    for block in blocks:
        fn = find_schedule(sch.get(block).name_hint, target)
        if fn is not None:
            break
    else:
        fn, block = find_schedule(FALLBACK, target), None
        if fn is None or not blocks:
            return None
    fn(sch, block, target)
    return sch.mod["main"].with_attr(SCHEDULED_ATTR, True)


def ApplySchedules(target=None) -> tvm.transform.Pass:
    @tvm.transform.module_pass(opt_level=0, name="tvm_patterns.ApplySchedules")
    def _pass(mod, _ctx):
        tgt = target or tvm.target.Target.current()
        updates = {}
        for gv, func in mod.functions_items():
            if not isinstance(func, tvm.tirx.PrimFunc) or (func.attrs and func.attrs.get(SCHEDULED_ATTR)):
                continue
            scheduled = schedule_primfunc(func, tgt)
            if scheduled is not None:
                updates[gv] = scheduled
        for gv, func in updates.items():
            mod[gv] = func
        return mod

    return _pass
