"""What the passes that fold a chain of Relax bindings into one kernel call (``int8_requantize``,
``column_combine_epilogue``, ``expand_depthwise``) read from a function: its bindings, their uses, the
attributes of the TIR functions the calls call, per-channel constants and static shapes."""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from .registry import LeaveDense, static_shape


def bindings_and_uses(func: relax.Function) -> tuple[dict, dict]:
    """({var: the value bound to it}, {var: how many times it is used}) of a function's body."""
    bindings = [b for block in func.body.blocks for b in block.bindings]
    values = {b.var: b.value for b in bindings}
    uses: dict = {}
    for expr in [*values.values(), func.body.body]:
        for v in relax.analysis.free_vars(expr):
            uses[v] = uses.get(v, 0) + 1
    return values, uses


def rewrite_functions(mutator, mod: tvm.IRModule, prepare=None) -> tvm.IRModule:
    """Visit each Relax function of ``mod`` with ``mutator`` (a PyExprMutator over ``mod``), its
    ``values`` and ``uses`` set to the function's ``bindings_and_uses`` first (then ``prepare(mutator)``),
    and drop the bindings the rewrite left unused."""
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.values, mutator.uses = bindings_and_uses(func)
            if prepare is not None:
                prepare(mutator)
            mutator.builder_.update_func(gv, mutator.visit_expr(func))
    return relax.transform.DeadCodeElimination()(mutator.builder_.get())


def single_use_call(values: dict, uses: dict, expr, op=None):
    """The call bound to ``expr`` if it is a variable used once (and a call of ``op``), else None
    (``values``, ``uses``: ``bindings_and_uses`` of the function)."""
    value = values.get(expr) if isinstance(expr, relax.Var) else None
    if not isinstance(value, relax.Call) or uses.get(expr, 0) != 1:
        return None
    return value if op is None or value.op == op else None


def known_shape(expr) -> tuple | None:
    """The static shape of a tensor expression, None where it is not known."""
    try:
        return static_shape(expr)
    except LeaveDense:
        return None


def tir_attr(mod: tvm.IRModule, call, name: str):
    """The attribute ``name`` of the TIR function a call_tir calls, None for any other call."""
    if not (isinstance(call, relax.Call) and call.op == tvm.ir.Op.get("relax.call_tir")):
        return None
    func = mod[call.args[0]]
    return func.attrs.get(name) if func.attrs is not None else None


def per_channel(const, channels: int) -> np.ndarray | None:
    """A bias constant of shape [1, K, 1, 1] or [K, 1, 1] as [K] float32; None for any other shape."""
    if not isinstance(const, tvm.ir.Constant):
        return None
    a = const.value.numpy()
    if a.dtype != np.float32 or a.shape not in ((1, channels, 1, 1), (channels, 1, 1)):
        return None
    return a.reshape(channels)
