#!/usr/bin/env python
"""Cross-build (once, cached) the aarch64 TVM runtime + RPC server the emulated ARM device runs.

    python scripts/build_arm_runtime.py [--cache-dir DIR] [--jobs N] [--serve [--tracker H:P --key K]]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tvm_patterns.devices.emulated_arm import build_runtime, default_cache_dir  # noqa: E402
from tvm_patterns.devices.emulated_arm.device import QEMU, SYSROOT  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache-dir", default=None, help=f"default: {default_cache_dir()}")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--verbose", action="store_true", help="show the compiler commands")
    ap.add_argument("--serve", action="store_true",
                    help="then run the server under qemu in the foreground (Ctrl-C stops it)")
    ap.add_argument("--tracker", default=None, help="HOST:PORT of an RPC tracker (with --serve)")
    ap.add_argument("--key", default="emulated-aarch64", help="device key (with --serve)")
    ap.add_argument("--port", type=int, default=9090, help="server port (with --serve)")
    args = ap.parse_args()

    t0 = time.time()
    server = build_runtime(args.cache_dir, jobs=args.jobs, verbose=args.verbose)
    print(f"{server}  ({time.time() - t0:.0f} s)")
    if args.serve:
        cmd = [QEMU, "-L", SYSROOT, str(server), "--host", "127.0.0.1", "--port", str(args.port),
               "--key", args.key]
        if args.tracker:
            cmd += ["--tracker", args.tracker]
        os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main()
