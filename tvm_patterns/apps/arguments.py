"""Command-line values the commands share, checked before any long work starts: a bad one ends
with argparse's one-line usage error (exit status 2)."""
from __future__ import annotations

import argparse
import os

from ..compress.kinds import check_connectivity
from ..devices.remote import check_tracker
from .models import NETWORKS


def networks(ap: argparse.ArgumentParser, text: str) -> list[str]:
    """A comma-separated list of our networks (--nets), at least one, each known."""
    nets = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in nets if n not in NETWORKS]
    if not nets or unknown:
        ap.error(f"--nets: {'unknown network(s) ' + ', '.join(unknown) if unknown else 'no network given'} "
                 f"(choose from {', '.join(sorted(NETWORKS))})")
    return nets


def at_least(ap: argparse.ArgumentParser, args, minimum: int, *names: str) -> None:
    """Each integer option of ``names`` (dest names) is >= ``minimum``."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < minimum:
            ap.error(f"--{name.replace('_', '-')} must be >= {minimum}, got {value}")


def connectivity(ap: argparse.ArgumentParser, value: float) -> None:
    """--connectivity: the 3x3 kernels' reduction, finite and >= 1 (1: every kernel kept)."""
    try:
        check_connectivity("--connectivity", value)
    except ValueError as e:
        ap.error(str(e))


def device(ap: argparse.ArgumentParser, args, required: bool = True) -> None:
    """--target / --rpc-tracker / --rpc-key: given together, a device for a target other than the
    host when ``required``, and the device answering at the tracker now rather than after the model
    has been built."""
    if bool(args.rpc_tracker) != bool(args.rpc_key):
        ap.error("--rpc-tracker and --rpc-key go together")
    if required and args.target != "host" and not args.rpc_tracker:
        ap.error(f"--target {args.target} runs on a device: give --rpc-tracker and --rpc-key")
    if args.rpc_tracker:
        try:
            check_tracker(args.rpc_tracker, args.rpc_key)
        except (ValueError, OSError) as e:
            ap.error(f"--rpc-tracker: {e}")


def tuning_log(ap: argparse.ArgumentParser, path: str | None) -> None:
    """--tuning-log, when given, is a directory that exists."""
    if path and path != "none" and not os.path.isdir(path):
        ap.error(f"--tuning-log: no directory {path!r} (tvm-patterns tune --log-dir makes one)")


def writable_dir(ap: argparse.ArgumentParser, flag: str, path: str) -> None:
    """The directory ``path`` (made if missing) takes files."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        ap.error(f"{flag}: cannot create {path!r} ({e.strerror})")
    if not os.access(path, os.W_OK | os.X_OK):
        ap.error(f"{flag}: {path!r} is not writable")
