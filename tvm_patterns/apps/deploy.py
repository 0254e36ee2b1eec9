"""``tvm-patterns build``: build a pruned reference network for a target, with the tuning records,
export it for the target's machine and, given a tracker and key, run it there.

    tvm-patterns build --model resnet18 --target arm_cpu --out resnet18_aarch64.so \\
        [--tuning-log tuning_logs] [--rpc-tracker HOST:9190 --rpc-key rk3399]

The network is pruned exactly as ``tvm-patterns demo`` and ``tune`` prune it, so the records of
``tvm-patterns tune`` apply. On the device the output is checked against PyTorch and timed.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

from .. import targets
from ..build import build
from ..devices.export import export_library
from ..devices.remote import RemoteDevice
from . import arguments
from .models import NETWORKS, pruned_network


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tvm-patterns build", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vgg16", choices=sorted(NETWORKS))
    ap.add_argument("--target", default="host", choices=sorted(targets.PRESETS))
    ap.add_argument("--out", required=True, help="the exported library (.so)")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--connectivity", type=float, default=3.6)
    ap.add_argument("--tuning-log", default=None, help="a tvm-patterns tune log directory (e.g. tuning_logs)")
    ap.add_argument("--rpc-tracker", metavar="HOST:PORT", help="run the library on the device behind this tracker")
    ap.add_argument("--rpc-key", help="the device's key at the tracker")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    arguments.at_least(ap, args, 1, "rounds")
    arguments.at_least(ap, args, 8, "image_size")
    arguments.connectivity(ap, args.connectivity)
    arguments.device(ap, args, required=False)   # without a device: cross-compile only
    arguments.tuning_log(ap, args.tuning_log)
    arguments.writable_dir(ap, "--out", os.path.dirname(os.path.abspath(args.out)))
    target = targets.by_name(args.target)
    model, x, mod = pruned_network(args.model, args.image_size, args.connectivity)
    report = []
    ex = build(mod, target, report=report, tuning_log=args.tuning_log)
    rewritten = sum(r.rewritten for r in report)
    print(f"built {args.model} for {targets.target_name(target)}: {rewritten}/{len(report)} layers sparse", flush=True)
    if not args.rpc_tracker:
        export_library(ex, args.out, target)
        print(f"wrote {args.out}")
        return 0
    with torch.no_grad():
        ref = model(x).numpy()
    device = RemoteDevice(args.rpc_tracker, args.rpc_key, target, rounds=args.rounds)
    seconds = device.time(ex, x, ref, path=args.out)
    print(f"wrote {args.out}; on {args.rpc_key}: matches PyTorch, {seconds * 1e3:.2f} ms (median of {args.rounds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
