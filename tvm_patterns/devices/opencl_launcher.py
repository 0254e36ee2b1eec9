"""Run the OpenCL kernels of a built module here, without TVM's OpenCL runtime (the wheel has none).

    runner = OpenCLLauncher.build(mod, targets.mali())   # the same pipeline and module as tvm_patterns.build
    out = runner(x)                                      # numpy in, numpy out, kernels run on PoCL

What a device's TVM runtime would do, done with pyopencl:
  * the OpenCL C of every kernel is read from the built executable (its "opencl" module);
  * for each PrimFunc, the host function that ``tvm.compile`` lowers (BindTarget + the default TIR
    pipeline) is read for its ``call_ffi_kernel`` calls, in order: kernel name, arguments (buffer data
    pointers, kernel parameters sorted alphabetically, and scalars) and launch extents
    (``blockIdx.* x threadIdx.*``); buffers the function allocates itself (e.g. the padded input) are
    temporaries the launcher allocates;
  * the lowered Relax ``main`` (after memory planning) is interpreted: tensor allocations, calls of
    PrimFuncs, reshapes; shape checks are skipped.

Numbers are meaningful, timings are not (PoCL runs the kernels on this CPU).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax, tirx

from ..passes.pipeline import pipeline

LAUNCH_TAGS = ("blockIdx.x", "blockIdx.y", "blockIdx.z", "threadIdx.x", "threadIdx.y", "threadIdx.z")


@dataclass
class KernelLaunch:
    """One ``call_ffi_kernel`` of a host function."""

    name: str
    args: list          # str: name of a buffer (its data pointer is passed); else a numpy-typed scalar
    groups: tuple       # work-groups per dimension (blockIdx.x, .y, .z)
    local: tuple        # work items per group (threadIdx.x, .y, .z)

    @property
    def global_size(self) -> tuple:
        return tuple(g * l for g, l in zip(self.groups, self.local))


@dataclass
class HostFunction:
    """What the lowered host function of one PrimFunc does: params in call order, temporaries, kernels."""

    params: list                                      # names of the PrimFunc's buffers, in call order
    temporaries: dict = field(default_factory=dict)   # buffer name -> (shape, dtype)
    kernels: list = field(default_factory=list)       # [KernelLaunch], in launch order


def _walk(node, visit):
    visit(node)
    if isinstance(node, tirx.SeqStmt):
        for s in node.seq:
            _walk(s, visit)
        return
    for attr in ("body", "then_case", "else_case"):
        child = getattr(node, attr, None)
        if isinstance(child, tirx.Stmt):
            _walk(child, visit)
    if isinstance(node, tirx.Evaluate):
        visit(node.value)


def _buffer_name(expr) -> str | None:
    """``buf.data`` (the data pointer of a buffer) -> the buffer's name."""
    if isinstance(expr, tvm.ir.Call) and getattr(expr.op, "name", "") == "tirx.buffer_data":
        return expr.args[0].name
    return None


def _scalar(expr):
    if isinstance(expr, tirx.IntImm):
        return np.dtype(str(expr.dtype)).type(int(expr.value))
    if isinstance(expr, tirx.FloatImm):
        return np.dtype(str(expr.dtype)).type(float(expr.value))
    raise NotImplementedError(f"kernel argument {expr} is neither a buffer nor a constant (dynamic shapes?)")


def lower_tir(mod: tvm.IRModule, target) -> tvm.IRModule:
    """The PrimFuncs of ``mod`` lowered as ``tvm.compile`` lowers those of a Relax module: host bound,
    then the "default" TIR pipeline (``relax.build``'s, also for Adreno: only TIR-only builds pick the
    "adreno" one)."""
    target = tvm.target.Target(target)
    tir = tvm.IRModule({gv: f for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)})
    tir = tirx.transform.BindTarget(target.with_host(target.host or target))(tir)
    tir_pipeline, _, _ = tirx.get_tir_pipeline("default")
    return tir_pipeline(tir)


def host_function(scheduled: tirx.PrimFunc, lowered_host: tirx.PrimFunc) -> HostFunction:
    """Read kernels, launch dimensions and temporaries of one PrimFunc (scheduled: before lowering)."""
    host = HostFunction([p.name for p in scheduled.params])

    def visit(node):
        if isinstance(node, tirx.AllocBuffer):
            buf = node.buffer
            host.temporaries[buf.name] = (tuple(int(s) for s in buf.shape), str(buf.dtype))
        elif isinstance(node, tvm.ir.Call) and getattr(node.op, "name", "") == "tirx.call_ffi_kernel":
            tags = [str(t) for t in node.attrs.launch_params]
            unknown = [t for t in tags if t not in LAUNCH_TAGS]
            if unknown:
                raise NotImplementedError(f"launch parameters {unknown} (e.g. dynamic shared memory)")
            n_args = len(node.args) - 1 - len(tags)
            args = [_buffer_name(a) or _scalar(a) for a in node.args[1:1 + n_args]]
            ext = dict(zip(tags, (int(e) for e in node.args[1 + n_args:])))
            host.kernels.append(KernelLaunch(
                name=node.args[0].value, args=args,
                groups=tuple(ext.get(f"blockIdx.{d}", 1) for d in "xyz"),
                local=tuple(ext.get(f"threadIdx.{d}", 1) for d in "xyz")))

    _walk(lowered_host.body, visit)
    if not host.kernels:
        raise NotImplementedError("a PrimFunc launches no kernel: it would run on the host CPU")
    return host


def opencl_source(executable) -> str:
    """The OpenCL C of every kernel in a built executable."""
    def find(m):
        if m.kind == "opencl":
            return m
        for i in m.imports:
            found = find(i)
            if found is not None:
                return found
        return None

    mod = find(executable.mod)
    if mod is None:
        raise ValueError("the executable holds no OpenCL module (not built for an OpenCL target?)")
    return mod.inspect_source()


def pocl_context():
    """A pyopencl context on PoCL (the Portable Computing Language CPU device)."""
    import pyopencl as cl

    platforms = [p for p in cl.get_platforms() if "Portable" in p.name]
    if not platforms:
        raise RuntimeError("no PoCL platform: apt-get install pocl-opencl-icd")
    return cl.Context(platforms[0].get_devices()[:1])


@dataclass
class _Tensor:
    buf: object
    shape: tuple
    dtype: str


class OpenCLLauncher:
    """Runs a Relax module built for an OpenCL target (Mali, Adreno) with pyopencl."""

    def __init__(self, lowered: tvm.IRModule, target, executable=None, context=None):
        """lowered: a module after ``tvm_patterns.pipeline(target)``; executable: what ``tvm.compile``
        made of it (built here when not given)."""
        import pyopencl as cl

        self.cl = cl
        self.target = tvm.target.Target(target)
        self.executable = executable or tvm.compile(lowered, self.target, relax_pipeline=None)
        self.source = opencl_source(self.executable)
        low = lower_tir(lowered, self.target)
        self.hosts = {gv.name_hint: host_function(f, low[gv.name_hint])
                      for gv, f in lowered.functions_items() if isinstance(f, tirx.PrimFunc)}
        self.main = lowered["main"]
        self.ctx = context or pocl_context()
        self.queue = cl.CommandQueue(self.ctx)
        self.program = cl.Program(self.ctx, self.source).build()
        self._constants: dict = {}

    @classmethod
    def build(cls, mod: tvm.IRModule, target, context=None, **pipeline_kw) -> "OpenCLLauncher":
        """``mod``: the Relax module ``tvm_patterns.build`` takes; pipeline_kw: ``pipeline``'s options."""
        return cls(pipeline(target, **pipeline_kw)(mod), target, context=context)

    @property
    def kernels(self) -> list:
        """Every kernel launch, in the order of the PrimFuncs in the module."""
        return [k for h in self.hosts.values() for k in h.kernels]

    # -- device memory ---------------------------------------------------------------------------
    def _empty(self, shape, dtype) -> _Tensor:
        nbytes = max(int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize, 1)
        return _Tensor(self.cl.Buffer(self.ctx, self.cl.mem_flags.READ_WRITE, nbytes), tuple(shape), dtype)

    def _upload(self, array: np.ndarray) -> _Tensor:
        array = np.ascontiguousarray(array)
        buf = self.cl.Buffer(self.ctx, self.cl.mem_flags.READ_WRITE | self.cl.mem_flags.COPY_HOST_PTR,
                             hostbuf=array if array.size else np.zeros(1, array.dtype))
        return _Tensor(buf, array.shape, str(array.dtype))

    def _download(self, t: _Tensor) -> np.ndarray:
        out = np.empty(t.shape, t.dtype)
        if out.size:
            self.cl.enqueue_copy(self.queue, out, t.buf).wait()
        return out

    # -- interpreting the lowered Relax main -----------------------------------------------------
    def _value(self, expr, env):
        if isinstance(expr, relax.Var):
            return env[expr]
        if isinstance(expr, tvm.ir.Constant):   # a tensor constant (metadata); dtypes etc. are not tensors
            value = getattr(expr, "value", None)
            if not hasattr(value, "numpy"):
                return value
            key = id(expr)
            if key not in self._constants:   # holding expr keeps its id unique
                self._constants[key] = (expr, self._upload(value.numpy()))
            return self._constants[key][1]
        if isinstance(expr, relax.Tuple):
            return tuple(self._value(f, env) for f in expr.fields)
        if isinstance(expr, relax.TupleGetItem):
            return self._value(expr.tuple_value, env)[expr.index]
        if isinstance(expr, relax.Call):
            return self._call(expr, env)
        return None   # shapes, strings, integers: arguments of builtins that _call reads itself

    def _call(self, call: relax.Call, env):
        op = call.op
        if isinstance(op, tvm.ir.GlobalVar):
            self._run_primfunc(op.name_hint, [self._value(a, env) for a in call.args])
            return None
        if isinstance(op, relax.ExternFunc):
            name = str(op.global_symbol)
            if name in ("vm.builtin.check_tensor_info", "vm.builtin.match_shape"):
                return None
            if name == "vm.builtin.reshape":
                t = self._value(call.args[0], env)
                return _Tensor(t.buf, tuple(int(d) for d in call.args[1].values), t.dtype)
            raise NotImplementedError(f"VM builtin {name}")
        name = op.name
        if name == "relax.vm.alloc_tensor":
            # A fresh buffer per tensor: memory planning only shares storage between disjoint lifetimes.
            return self._empty([int(d) for d in call.args[2].values], str(call.args[3].value))
        if name in ("relax.vm.alloc_storage", "relax.vm.kill_object", "relax.null_value",
                    "relax.memory.kill_tensor", "relax.memory.kill_storage"):
            return None
        raise NotImplementedError(f"Relax operator {name}")

    def _run_primfunc(self, name: str, tensors: list) -> None:
        host = self.hosts[name]
        data = dict(zip(host.params, tensors))
        for buf, (shape, dtype) in host.temporaries.items():
            data[buf] = self._empty(shape, dtype)
        for k in host.kernels:
            kernel = self.cl.Kernel(self.program, k.name)
            kernel.set_args(*[data[a].buf if isinstance(a, str) else a for a in k.args])
            self.cl.enqueue_nd_range_kernel(self.queue, kernel, k.global_size, k.local)
        self.queue.finish()

    def __call__(self, *inputs: np.ndarray):
        fn = self.main
        env = {p: self._upload(np.asarray(x)) for p, x in zip(fn.params, inputs)}
        for block in fn.body.blocks:
            for b in block.bindings:
                env[b.var] = self._value(b.value, env)
        out = self._value(fn.body.body, env)
        if isinstance(out, tuple):
            return tuple(self._download(t) for t in out)
        return self._download(out)
