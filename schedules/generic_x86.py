"""generic_x86: the fallback for operators nobody wrote a schedule for (pooling, linear, adds).

Each top-level block gets its leading spatial loops fused and run in parallel; nothing else, so
it is safe for any block.
"""
from __future__ import annotations

from tvm import s_tir

from .registry import register_schedule

SPATIAL = 0  # IterVar.DataPar


@register_schedule("*", "cpu")
def schedule(sch: s_tir.Schedule, block, target) -> None:
    for b in sch.get_child_blocks(sch.get_sblock("root")):
        loops = sch.get_loops(b)
        iters = sch.get(b).iter_vars
        lead = 0
        while lead < min(len(loops), len(iters)) and int(iters[lead].iter_type) == SPATIAL:
            lead += 1
        if lead == 0:
            continue
        fused = sch.fuse(*loops[:lead]) if lead > 1 else loops[0]
        if int(sch.get(fused).extent) > 1:
            sch.parallel(fused)
