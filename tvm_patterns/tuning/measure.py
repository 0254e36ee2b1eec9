"""What runs in MetaSchedule's builder and runner worker processes.

These functions are shipped to the workers by value (cloudpickle), so a worker never imports
tvm_patterns (nor torch); they may only use tvm and numpy.
"""
from __future__ import annotations

import hashlib

import numpy as np


def build_artifact(mod, target, _params):
    """LocalBuilder's f_build without the default's ``import tvm.s_tir.tensor_intrin`` (20-60 s here,
    longer than a build's timeout); our design spaces use no tensor intrinsics."""
    import tvm

    return tvm.tirx.build(mod, target=target)


def signature(args_info) -> str:
    """Key of a kernel's argument list: dtypes and shapes of its tensors (ArgInfo JSON objects)."""
    text = repr([(str(a[1]), tuple(int(x) for x in a[2])) for a in args_info])
    return hashlib.sha1(text.encode()).hexdigest()[:16]


class TrueArguments:
    """``f_alloc_argument`` that gives a kernel its real constant inputs.

    Our kernels read index tables (tap offsets, kernel counts) that are call_tir constants in the
    built model; random data there reads out of bounds. ``path`` is an .npz of arrays named
    ``<signature>/<argument index>``; arguments without an array get uniform random data.
    LocalRunner calls it with (device, args_info, alloc_repeat), RPCRunner with the session first.
    """

    def __init__(self, path: str):
        self.path = path

    def __call__(self, *args):
        device, args_info, alloc_repeat = args[-3:]
        import tvm

        rng = np.random.default_rng(0)
        key = signature(args_info)
        with np.load(self.path) as tables:
            arrays = []
            for i, (_, dtype, shape) in enumerate(args_info):
                name = f"{key}/{i}"
                if name in tables.files:
                    arrays.append(tables[name].astype(dtype))
                else:
                    arrays.append(rng.uniform(-1, 1, size=shape).astype(dtype))
        repeated = []
        for _ in range(alloc_repeat):
            tensors = []
            for a in arrays:
                t = tvm.runtime.empty(a.shape, str(a.dtype), device)
                t.copyfrom(a)
                tensors.append(t)
            repeated.append(tensors)
        return repeated
