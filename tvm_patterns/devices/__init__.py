"""Where built models run and how long they take: shared libraries for another machine (``export``),
a device behind an RPC tracker (``remote``), the emulated aarch64 device (``emulated_arm``), the
OpenCL kernels of a build on PoCL (``opencl_launcher``), timing (``timing``, ``profiling``) and the
other engines a user would pick instead (``peers``)."""
from .export import export_library

__all__ = ["export_library"]
