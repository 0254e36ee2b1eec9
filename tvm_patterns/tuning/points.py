"""Points of a design space: the decisions of its sampling instructions, a point replayed as a
schedule, and every point (for spaces small enough to measure whole, ``scripts/bench_space.py``)."""
from __future__ import annotations

import itertools

from tvm import s_tir


def sampled(trace) -> list:
    """(instruction, decision) of the sampling instructions of a trace, in order."""
    return [(i, trace.get_decision(i)) for i in trace.insts if trace.get_decision(i) is not None]


def replayed(space: s_tir.Schedule, decisions: list, mod) -> s_tir.Schedule:
    """``space`` (a design space) replayed on ``mod`` with its sampling decisions set to ``decisions``."""
    trace = space.trace
    for (inst, _), decision in zip(sampled(trace), decisions):
        trace = trace.with_decision(inst, decision, remove_postproc=True)
    sch = s_tir.Schedule(mod)
    trace.apply_to_schedule(sch, remove_postproc=True)
    return sch


def _factorizations(extent: int, parts: int, max_innermost: int) -> list[list[int]]:
    if parts == 1:
        return [[extent]] if extent <= max_innermost else []
    return [[d, *rest] for d in range(1, extent + 1) if extent % d == 0
            for rest in _factorizations(extent // d, parts - 1, max_innermost)]


def decision_domains(space: s_tir.Schedule) -> list[list]:
    """Every decision each sampling instruction of ``space`` can take, in trace order."""
    domains = []
    for inst, decision in sampled(space.trace):
        kind = inst.kind.name
        if kind == "SamplePerfectTile":
            extent = 1
            for factor in decision:
                extent *= int(factor)
            domains.append(_factorizations(extent, len(decision), int(inst.attrs[1]) or extent))
        elif kind == "SampleCategorical":
            domains.append(list(range(len(inst.attrs[0]))))
        else:
            raise NotImplementedError(f"enumerating the decisions of {kind} is not supported")
    return domains


def every_point(space: s_tir.Schedule) -> list[tuple]:
    """All decision lists of ``space`` (the product of its ``decision_domains``)."""
    return list(itertools.product(*decision_domains(space)))
