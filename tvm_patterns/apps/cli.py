"""The ``tvm-patterns`` command: ``demo``, ``sweep``, ``tune``, ``build``."""
from __future__ import annotations

import sys

COMMANDS = {
    "demo": "tvm_patterns.apps.demo",
    "sweep": "tvm_patterns.apps.sweep",
    "tune": "tvm_patterns.apps.tune",
    "build": "tvm_patterns.apps.deploy",
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: tvm-patterns {{{','.join(COMMANDS)}}} [options]   (-h after a command for its options)")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    import importlib

    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
