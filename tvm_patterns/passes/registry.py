"""The registry of sparse kinds: one place per kind of sparsity the rewrite pass knows.

A kind looks at one Relax call with a constant weight and either returns a ``Plan`` (how to
replace it) or raises ``LeaveDense`` with the reason it stays dense. The rewrite pass asks every
kind registered for the call's operator, in registration order, and takes the first plan.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import tvm
from tvm import relax


class LeaveDense(Exception):
    """Raised by a kind's ``plan``: the layer stays dense, for the reason given."""


@dataclass
class LayerContext:
    """What a kind may know about the layer beyond the call itself."""

    name: str                      # torch module name when known, else the Relax variable name
    options: dict = field(default_factory=dict)  # the rewrite's options for this kind


@dataclass
class Plan:
    """A kind's decision to rewrite a call.

    emit(bb, call) -> relax.Expr  builds the replacement (usually ``bb.call_te``).
    summary: short human description, e.g. "8 patterns, 3.6x connectivity, 8.1x fewer MACs".
    """

    emit: Callable[[relax.BlockBuilder, relax.Call], relax.Expr]
    summary: str
    macs_dense: int = 0
    macs_sparse: int = 0


@dataclass(frozen=True)
class SparseKind:
    name: str
    ops: tuple                     # Relax operator names, e.g. ("relax.nn.conv2d",)
    plan: Callable[[relax.Call, LayerContext], Plan]


_KINDS: dict[str, SparseKind] = {}


def register_sparse_kind(name: str, ops):
    """Decorator: ``@register_sparse_kind("pattern", ["relax.nn.conv2d"])`` on a plan function."""

    def wrap(plan_fn):
        if name in _KINDS:
            raise ValueError(f"sparse kind {name!r} is registered twice")
        _KINDS[name] = SparseKind(name, tuple(ops), plan_fn)
        return plan_fn

    return wrap


def sparse_kinds(names=None) -> list[SparseKind]:
    """The registered kinds (all, or those named), in registration order."""
    if names is None:
        return list(_KINDS.values())
    unknown = [n for n in names if n not in _KINDS]
    if unknown:
        raise ValueError(f"unknown sparse kind(s) {unknown}; registered: {sorted(_KINDS)}")
    return [_KINDS[n] for n in names]


def constant_weight(call: relax.Call, index: int = 1):
    """The numpy value of a call's constant argument, or LeaveDense."""
    arg = call.args[index]
    if not isinstance(arg, tvm.ir.Constant):
        raise LeaveDense("weight is not a compile-time constant")
    return arg.value.numpy()


def static_shape(expr: relax.Expr, what: str = "input") -> tuple:
    """The static shape of a tensor expression, or LeaveDense."""
    shape = getattr(expr.ty, "shape", None)
    if shape is None:
        raise LeaveDense(f"{what} has no known shape")
    dims = []
    for d in shape:
        if not isinstance(d, tvm.tirx.IntImm):
            raise LeaveDense(f"{what} shape {list(shape)} is not static")
        dims.append(int(d))
    return tuple(dims)
