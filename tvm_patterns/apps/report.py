"""Results as files and text: CSV with a header row, plain-text tables."""
from __future__ import annotations

import csv
import os


def write_csv(path: str, rows: list[dict]) -> None:
    """Rows of dicts -> CSV with a header row (columns in first-seen order)."""
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


def fmt_table(rows: list[dict], cols: list[str]) -> str:
    """A plain-text table of the given columns (floats with 3 significant digits)."""
    def cell(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    cells = [[cell(r.get(c, "")) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(x[i]) for x in cells]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(x.rjust(w) for x, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
