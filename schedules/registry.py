"""Which schedule runs a block, per target key.

A schedule is ``fn(sch: tvm.s_tir.Schedule, block: SBlockRV, target) -> None``, registered for the
name of the main block of one of our computes and a target key ("cpu", "arm_cpu", "mali",
"adreno", "gpu"). The most specific key of the target (its keys, in order) wins.
"""
from __future__ import annotations

from typing import Callable

_SCHEDULES: dict[tuple[str, str], Callable] = {}


def register_schedule(block_name: str, target_key: str):
    def wrap(fn):
        key = (block_name, target_key)
        if key in _SCHEDULES:
            raise ValueError(f"schedule for block {block_name!r} on {target_key!r} registered twice")
        _SCHEDULES[key] = fn
        return fn

    return wrap


FALLBACK = "*"   # block name of a target's schedule for functions no other schedule claims


def find_schedule(block_name: str, target) -> Callable | None:
    for key in list(target.keys):
        fn = _SCHEDULES.get((block_name, str(key)))
        if fn is not None:
            return fn
    return None


def has_schedule(block_name: str, target=None) -> bool:
    """Whether ``target`` (default: the current one) has a schedule for the block: a kind rewrites a
    layer into a kernel only where that kernel can be scheduled."""
    from tvm.target import Target

    target = target or Target.current(allow_none=True)
    return target is not None and find_schedule(block_name, target) is not None


def scheduled_block_names() -> set[str]:
    return {b for b, _ in _SCHEDULES if b != FALLBACK}
