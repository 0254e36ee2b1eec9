"""Results as files and text: CSV with a header row, plain-text tables."""
from __future__ import annotations

import contextlib
import csv
import os
import tempfile


def write_csv(path: str, rows: list[dict]) -> None:
    """Rows of dicts -> CSV with a header row (columns in first-seen order), crash-safe: written to a
    temporary file beside ``path`` and renamed over it, so a failed write (disk full, Ctrl-C) leaves
    the previous file whole."""
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols]
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def fmt_table(rows: list[dict], cols: list[str]) -> str:
    """A plain-text table of the given columns (floats with 3 significant digits)."""
    def cell(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    cells = [[cell(r.get(c, "")) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(x[i]) for x in cells]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(x.rjust(w) for x, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
