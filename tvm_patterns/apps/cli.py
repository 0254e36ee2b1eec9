"""The ``tvm-patterns`` command: ``demo``, ``sweep``, ``tune``, ``build``.

A user error (a bad value, a missing file, an unreachable device, something not supported yet)
ends with one line ``tvm-patterns CMD: error: ...`` and exit status 2, as argparse's usage errors
do; ``--verbose`` shows the traceback instead. Any other failure says where to look (exit status 1).
"""
from __future__ import annotations

import sys

COMMANDS = {
    "demo": "tvm_patterns.apps.demo",
    "sweep": "tvm_patterns.apps.sweep",
    "tune": "tvm_patterns.apps.tune",
    "build": "tvm_patterns.apps.deploy",
}
USER_ERRORS = (ValueError, OSError, LookupError, NotImplementedError)   # OSError: files, ConnectionError


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    argv = [a for a in argv if a != "--verbose"]
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: tvm-patterns {{{','.join(COMMANDS)}}} [options] [--verbose]   (-h after a command for its options)")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    import importlib

    command = argv[0]
    try:
        return importlib.import_module(COMMANDS[command]).main(argv[1:])
    except KeyboardInterrupt:
        print(f"tvm-patterns {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001  one line instead of a traceback, unless --verbose
        if verbose:
            raise
        first = (str(e).strip().splitlines() or [""])[0]
        if isinstance(e, USER_ERRORS):
            print(f"tvm-patterns {command}: error: {first}", file=sys.stderr)
            return 2
        print(f"tvm-patterns {command}: error: {type(e).__name__}: {first} (run again with --verbose "
              "for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
