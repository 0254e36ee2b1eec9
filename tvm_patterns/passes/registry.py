"""The registry of sparse kinds: one place per kind of sparsity the rewrite pass knows.

A kind looks at one Relax call with a constant weight and either returns a ``Plan`` (how to
replace it) or raises ``LeaveDense`` with the reason it stays dense. The rewrite pass asks every
kind registered for the call's operator, in registration order, and takes the first plan.
"""
from __future__ import annotations

import difflib
import math
import numbers
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import tvm
from tvm import relax

# The torch module name of the layer a kernel of ours computes, on its TIR function (for passes that
# fold or fuse kernels after SparseRewrite and update that layer's LayerDecision).
LAYER_ATTR = "tvm_patterns.layer"


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
    weight_bytes_packed: int = 0   # the packed constants the call takes: values and indices


@dataclass(frozen=True)
class Option:
    """What a kind's option may hold: ``accepts(value)``, ``expected`` saying it in words, and
    ``normal(value)`` the accepted value as a plain Python one (numpy scalars become int / float)."""

    expected: str
    accepts: Callable[[object], bool]
    normal: Callable[[object], object] = lambda v: v


# numbers.Integral / Real: numpy scalars (np.int64 from a shape, np.float32) are accepted as before
def _is_int(v, least: int) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= least


def integer(least: int) -> Option:
    return Option(f"an integer >= {least}", lambda v: _is_int(v, least), int)


def integers(least: int) -> Option:
    """A non-empty list, tuple, range or 1-D array of integers (candidate sizes)."""
    return Option(f"a non-empty list of integers >= {least}",
                  lambda v: isinstance(v, (list, tuple, range, np.ndarray)) and np.ndim(v) == 1 and len(v) > 0
                  and all(_is_int(x, least) for x in v), lambda v: tuple(int(x) for x in v))


def number(least: float) -> Option:
    return Option(f"a finite number >= {least}", lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)
                  and math.isfinite(v) and v >= least, float)


def one_of(*choices) -> Option:
    return Option(f"one of {choices}", lambda v: isinstance(v, str) and v in choices)


FLAG = Option("True or False", lambda v: isinstance(v, bool))
CHECKED_BY_PLAN = Option("", lambda v: True)   # an object (a pattern library, calibrated ranges) its plan checks


@dataclass(frozen=True)
class SparseKind:
    name: str
    ops: tuple                     # Relax operator names, e.g. ("relax.nn.conv2d",)
    plan: Callable[[relax.Call, LayerContext], Plan]
    options: dict = field(default_factory=dict)   # {option name: Option} its plan reads (``check_options``)


_KINDS: dict[str, SparseKind] = {}


def register_sparse_kind(name: str, ops, options=None, before: str | None = None):
    """Decorator: ``@register_sparse_kind("pattern", ["relax.nn.conv2d"], options={"max_density": number(0)})``
    on a plan function; ``options`` are the keys its ``LayerContext.options`` may hold, each with
    the values it accepts; ``before``
    names a registered kind this one is tried ahead of (a narrower structure of the same weights)."""

    def wrap(plan_fn):
        if name in _KINDS:
            raise ValueError(f"sparse kind {name!r} is registered twice")
        if before is not None and before not in _KINDS:
            raise ValueError(f"sparse kind {name!r}: no kind {before!r} to be tried before")
        kind = SparseKind(name, tuple(ops), plan_fn, dict(options or {}))
        items = list(_KINDS.items())
        at = len(items) if before is None else [n for n, _ in items].index(before)
        _KINDS.clear()
        _KINDS.update(items[:at] + [(name, kind)] + items[at:])
        return plan_fn

    return wrap


def sparse_kinds(names=None) -> list[SparseKind]:
    """The registered kinds (all, or those named), in registration order."""
    if names is None:
        return list(_KINDS.values())
    unknown = [n for n in names if n not in _KINDS]
    if unknown:
        raise ValueError(f"unknown sparse kind(s) {unknown}{_did_you_mean(unknown[0], _KINDS)}; "
                         f"registered: {sorted(_KINDS)}")
    return [_KINDS[n] for n in names]


def _did_you_mean(word, choices) -> str:
    near = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def check_options(options) -> dict:
    """``{kind name: {option: value}}`` checked against the registry: an unknown kind or option is a
    ``ValueError`` naming it and the closest valid one (a misspelt option would otherwise be ignored
    and its default used), and so is a value the option does not accept. Returns the options as a
    plain dict of dicts."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ValueError(f"options must be a dict {{kind: {{option: value}}}}, got {type(options).__name__}")
    checked = {}
    for kind, opts in options.items():
        if kind not in _KINDS:
            raise ValueError(f"options: unknown sparse kind {kind!r}{_did_you_mean(kind, _KINDS)}; "
                             f"registered: {sorted(_KINDS)}")
        if not isinstance(opts, dict):
            raise ValueError(f"options[{kind!r}] must be a dict of options, got {type(opts).__name__}")
        known = _KINDS[kind].options
        for key, value in opts.items():
            if key not in known:
                raise ValueError(f"options[{kind!r}]: unknown option {key!r}{_did_you_mean(key, known)}; "
                                 f"the {kind} kind takes {list(known)}")
            if not known[key].accepts(value):
                raise ValueError(f"options[{kind!r}][{key!r}] must be {known[key].expected}, got {value!r}")
        checked[kind] = {key: known[key].normal(value) for key, value in opts.items()}
    return checked


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
