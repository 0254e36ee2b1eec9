"""Tuning tasks of a model: the fused PrimFuncs of our build that have a design space.

A task is found by running our own build pipeline up to fusion (so its PrimFuncs are exactly the
ones ``build`` later looks up in the database) and keeping each distinct PrimFunc whose scheduled
block's schedule module also defines ``design_space`` (schedules/*: the hand schedule is one point
of that space). Pattern convs and the dense convs that remain are both tasks, so tuned
end-to-end numbers are fair to the dense layers.

The points of a space: the decisions of its sampling instructions, a point replayed as a schedule,
and every point (for spaces small enough to measure whole, ``scripts/bench_space.py``).
"""
from __future__ import annotations

import functools
import itertools
import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import tvm
import tvm_ffi
from tvm import relax, s_tir
from tvm.s_tir.meta_schedule.arg_info import ArgInfo
from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

import schedules  # noqa: F401  (registers every schedule)
from schedules.registry import find_schedule

from ..passes.pipeline import pipeline
from .measure import signature


@dataclass
class Task:
    """One kernel to tune. mod: {"main": PrimFunc}; constants: argument index -> the array the
    model passes there (index tables, weights, bias); weight: how many call sites share it."""

    name: str
    block: str
    mod: tvm.IRModule
    design_space: Callable
    hand_schedule: Callable
    weight: int = 1
    constants: dict = field(default_factory=dict)

    @property
    def signature(self) -> str:
        return signature([a.as_json() for a in ArgInfo.from_prim_func(self.mod["main"])])

    def default_schedule(self, target) -> s_tir.Schedule:
        """The hand schedule (the default point of the design space) of this task."""
        sch = s_tir.Schedule(self.mod)
        self.hand_schedule(sch, sch.get_sblock(self.block), target)
        return sch


def tunable_block(func: tvm.tirx.PrimFunc, target) -> tuple[str, Callable, Callable] | None:
    """(block name, design space, hand schedule) of the PrimFunc's scheduled block, or None."""
    sch = s_tir.Schedule(func)
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        name = sch.get(block).name_hint
        fn = find_schedule(name, target)
        if fn is None:
            continue
        space = getattr(sys.modules[fn.__module__], "design_space", None)
        if space is None:
            return None
        space = functools.partial(space, target=target)
        try:
            space(s_tir.Schedule(func))
        except NotImplementedError:   # this shape has no space (e.g. a batched matmul)
            return None
        return name, space, fn
    return None


def fused_module(mod: tvm.IRModule, target, **pipeline_kw) -> tvm.IRModule:
    """The Relax module as our build pipeline has it after fusion, before any schedule."""
    captured = []

    @tvm.transform.module_pass(opt_level=0, name="tvm_patterns.tuning.Capture")
    def capture(m, _ctx):
        captured.append(tvm.IRModule(dict(m.functions_items())))   # a copy: later passes edit in place
        return m

    pipeline(target, extra_tir_passes=[capture], **pipeline_kw)(mod)
    return captured[0]


def _call_sites(mod: tvm.IRModule) -> list[tuple[str, list]]:
    call_tir = tvm.ir.Op.get("relax.call_tir")
    sites = []

    @relax.expr_functor.visitor
    class Sites(relax.PyExprVisitor):
        def visit_call_(self, call):
            if call.op.same_as(call_tir):
                sites.append((call.args[0].name_hint, list(call.args[1].fields)))
            for a in call.args:
                self.visit_expr(a)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            Sites().visit_expr(func)
    return sites


def extract_tasks(mod: tvm.IRModule, target, **pipeline_kw) -> tuple[list[Task], list[str]]:
    """Tasks of a Relax module (imported by ``from_pytorch``) and the names of the kernels that
    have no design space for this target (they keep their hand schedule)."""
    fused = fused_module(mod, target, **pipeline_kw)
    tasks: list[Task] = []
    untunable: list[str] = []
    for name, args in _call_sites(fused):
        func = fused[name]
        task_mod = _normalize_mod(func)
        same = [t for t in tasks if tvm_ffi.structural_equal(t.mod, task_mod)]
        if same:   # another call of a kernel already found (its space is not built again)
            same[0].weight += 1
            continue
        found = tunable_block(func, target)
        if found is None:
            untunable.append(name)
            continue
        block, space, hand = found
        constants = {i: a.value.numpy() for i, a in enumerate(args) if isinstance(a, tvm.ir.Constant)}
        tasks.append(Task(name, block, task_mod, space, hand, 1, constants))
    return tasks, sorted(set(untunable))


def save_constants(tasks: list[Task], path: str) -> None:
    """The arrays of every task's constant arguments, for ``measure.TrueArguments``."""
    arrays = {}
    for t in tasks:
        for i, a in t.constants.items():
            arrays.setdefault(f"{t.signature}/{i}", a)   # same signature: same kernel, either is valid
    np.savez(path, **arrays)


# --- Points of a design space ---------------------------------------------------------------

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
