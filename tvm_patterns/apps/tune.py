"""``tvm-patterns tune``: tune a pruned reference network's kernels for a target.

    tvm-patterns tune --model vgg16 --target host --trials 32
    tvm-patterns tune --model resnet18 --target arm_cpu --trials 64 --rpc-tracker 10.0.0.2:9190 --rpc-key rk3399

The network is pruned exactly as ``tvm-patterns demo`` prunes it (same seed and connectivity), so
the demo's build finds the records. Exit status 0: tuned; 1: stopped (runner failing); 130: Ctrl-C.
"""
from __future__ import annotations

import argparse
import sys

from .. import targets
from ..tuning import DEFAULT_LOG_DIR, rpc_runner, tune
from ..tuning.verify import ROUNDS
from . import arguments
from .models import NETWORKS, pruned_network


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tvm-patterns tune", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vgg16", choices=sorted(NETWORKS))
    ap.add_argument("--target", default="host", choices=sorted(targets.PRESETS))
    ap.add_argument("--trials", type=int, default=32, help="measurements per kernel")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--connectivity", type=float, default=3.6)
    ap.add_argument("--rpc-tracker", metavar="HOST:PORT", help="measure on a device behind this RPC tracker")
    ap.add_argument("--rpc-key", help="the device's key at the tracker")
    ap.add_argument("--log-dir", default=DEFAULT_LOG_DIR, help="records go to LOG_DIR/<target name>/")
    ap.add_argument("--verify-rounds", type=int, default=ROUNDS,
                    help="alternating rounds of the final side-by-side re-measurement (0: none)")
    args = ap.parse_args(argv)
    arguments.at_least(ap, args, 1, "trials")
    arguments.at_least(ap, args, 0, "verify_rounds")
    arguments.at_least(ap, args, 8, "image_size")
    arguments.connectivity(ap, args.connectivity)
    arguments.device(ap, args)
    arguments.writable_dir(ap, "--log-dir", args.log_dir)
    target = targets.by_name(args.target)
    _, _, mod = pruned_network(args.model, args.image_size, args.connectivity)
    runner = rpc_runner(args.rpc_tracker, args.rpc_key) if args.rpc_tracker else None
    try:
        result = tune(mod, target, trials=args.trials, runner=runner, log_dir=args.log_dir,
                      verify_rounds=args.verify_rounds, out=lambda s: print(s, flush=True))
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        return 130
    if result.interrupted:
        return 130
    return 1 if result.stopped else 0


if __name__ == "__main__":
    sys.exit(main())
