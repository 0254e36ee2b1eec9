"""The registry of sparse kinds: one place per kind of sparsity the rewrite pass knows.

A kind looks at one Relax call with a constant weight and either returns a ``Plan`` (how to
replace it) or raises ``LeaveDense`` with the reason it stays dense. The rewrite pass asks every
kind registered for the call's operator, in registration order, and takes the first plan.
"""
from __future__ import annotations

import difflib
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
    weight_bytes_packed: int = 0   # the packed constants the call takes: values and indices


@dataclass(frozen=True)
class SparseKind:
    name: str
    ops: tuple                     # Relax operator names, e.g. ("relax.nn.conv2d",)
    plan: Callable[[relax.Call, LayerContext], Plan]
    options: tuple = ()            # the option names its plan reads (``check_options`` refuses others)


_KINDS: dict[str, SparseKind] = {}


def register_sparse_kind(name: str, ops, options=(), before: str | None = None):
    """Decorator: ``@register_sparse_kind("pattern", ["relax.nn.conv2d"], options=("library", ...))``
    on a plan function; ``options`` are the keys its ``LayerContext.options`` may hold; ``before``
    names a registered kind this one is tried ahead of (a narrower structure of the same weights)."""

    def wrap(plan_fn):
        if name in _KINDS:
            raise ValueError(f"sparse kind {name!r} is registered twice")
        if before is not None and before not in _KINDS:
            raise ValueError(f"sparse kind {name!r}: no kind {before!r} to be tried before")
        kind = SparseKind(name, tuple(ops), plan_fn, tuple(options))
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
    and its default used). Returns the options as a plain dict of dicts."""
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
        for key in opts:
            if key not in _KINDS[kind].options:
                raise ValueError(f"options[{kind!r}]: unknown option {key!r}{_did_you_mean(key, _KINDS[kind].options)}; "
                                 f"the {kind} kind takes {list(_KINDS[kind].options)}")
        checked[kind] = dict(opts)
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
