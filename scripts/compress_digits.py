"""Compress a small CNN on scikit-learn's digits three ways and compare with the dense network.

    python scripts/compress_digits.py [--csv FILE] [--out-dir DIR] [--quick] [--tvm]

Digits (1797 8x8 images shipped inside scikit-learn, nothing downloaded), upsampled to 16x16, fixed
seeds, a stratified train/test split. The dense CNN (four 3x3 convs) is trained once, then copies of
it are compressed:
  oneshot   pattern + connectivity projection, masks, masked retraining (same epochs as ADMM + retrain)
  admm      ADMM towards the same structure, hard prune, masked retraining
  admm_hi   the same at a higher connectivity rate
The first conv (one input channel) gets patterns only; the others patterns and connectivity.
"3x3 reduction" counts every weight of every 3x3 conv, dense ones included.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tvm_patterns.apps.report import write_csv
from tvm_patterns.compress import ADMMPruner, oneshot_prune
from tvm_patterns.sparsity import PatternLibrary

SEED = 0


@dataclass(frozen=True)
class Budget:
    dense_epochs: int = 30
    admm_epochs: int = 16
    retrain_epochs: int = 12
    lr: float = 3e-3               # dense training
    admm_lr: float = 3e-3
    retrain_lr: float = 1e-3       # masked retraining (one-shot: all its epochs)
    rho: float = 0.1
    rho_growth: float = 1.35       # per epoch: 0.1 -> 12 over 16 ADMM epochs
    rho_max: float = 30.0
    batch: int = 64


QUICK = Budget(dense_epochs=4, admm_epochs=3, retrain_epochs=2)


@dataclass(frozen=True)
class Method:
    name: str
    connectivity: float | None      # None: the dense network
    admm: bool = False


METHODS = (Method("dense", None), Method("oneshot", 3.6), Method("admm", 3.6, admm=True),
           Method("admm_hi", 6.0, admm=True))


def load_digits_16x16(seed: int = SEED, test_size: float = 0.3):
    """(x_train, y_train, x_test, y_test): x [N, 1, 16, 16] float32, standardised on the train set."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype("float32") / 16.0)[:, None]
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    y = torch.from_numpy(digits.target.astype("int64"))
    tr, te = train_test_split(np.arange(len(y)), test_size=test_size, random_state=seed, stratify=y.numpy())
    mean, std = x[tr].mean(), x[tr].std()
    return (x[tr] - mean) / std, y[tr], (x[te] - mean) / std, y[te]


def digits_cnn() -> nn.Module:
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*block(1, 16), nn.MaxPool2d(2), *block(16, 32), *block(32, 32), nn.MaxPool2d(2),
                         *block(32, 64), nn.Flatten(), nn.Linear(64 * 4 * 4, 10))


def conv3x3_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]


def prune_config(model: nn.Module, connectivity: float) -> list[dict]:
    names = conv3x3_names(model)
    return [{"module": names[0], "kind": "pattern", "patterns": 8, "taps": 4}] + \
           [{"module": n, "kind": "pattern", "patterns": 8, "taps": 4, "connectivity": connectivity} for n in names[1:]]


def digits_library(dense: nn.Module) -> PatternLibrary:
    """One library for every method: the dense network's 8 most frequent 4-tap masks."""
    return PatternLibrary.extract([dense.get_submodule(n).weight.detach().numpy() for n in conv3x3_names(dense)], 8, 4)


def conv3x3_reduction(model: nn.Module) -> float:
    """All 3x3 conv weights / the nonzero ones (the effective, masked weights)."""
    ws = [m.weight.detach() for n, m in model.named_modules() if n in set(conv3x3_names(model))]
    return sum(w.numel() for w in ws) / max(1, sum(int((w != 0).sum()) for w in ws))


@torch.no_grad()
def accuracy(model: nn.Module, x, y) -> float:
    model.eval()
    return 100.0 * float((model(x).argmax(1) == y).float().mean())


def train(model, x, y, epochs: int, lr: float, budget: Budget, seed: int, pruner: ADMMPruner | None = None):
    """Adam with a cosine schedule; with a pruner, its penalty joins the loss and it steps per epoch."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs * -(-len(y) // budget.batch)))
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(y), generator=g).split(budget.batch):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            if pruner is not None:
                loss = loss + pruner.penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if pruner is not None:
            pruner.step()


def compress(dense: nn.Module, method: Method, data, budget: Budget, library: PatternLibrary):
    """A compressed copy of ``dense`` (masks squashed) and the pruner that made it."""
    xtr, ytr = data[0], data[1]
    model = copy.deepcopy(dense)
    config = prune_config(model, method.connectivity)
    torch.manual_seed(SEED)
    if method.admm:
        pruner = ADMMPruner(model, config, library, rho=budget.rho, rho_growth=budget.rho_growth,
                            rho_max=budget.rho_max)
        train(model, xtr, ytr, budget.admm_epochs, budget.admm_lr, budget, SEED + 1, pruner)
        pruner.prune()
        train(model, xtr, ytr, budget.retrain_epochs, budget.retrain_lr, budget, SEED + 2)
    else:   # same number of epochs as ADMM + retraining, all of them masked
        pruner = oneshot_prune(model, config, library)
        train(model, xtr, ytr, budget.admm_epochs + budget.retrain_epochs, budget.retrain_lr, budget, SEED + 2)
    pruner.squash()
    return model, pruner


@dataclass
class Row:
    method: str
    connectivity: str
    test_accuracy: float
    conv3x3_reduction: float
    seconds: float


def run(budget: Budget = Budget(), tvm_check: bool = False, log=print) -> tuple[list[Row], dict[str, nn.Module]]:
    """Train dense, compress three ways; returns the rows and the models (eval mode) by method name."""
    torch.manual_seed(SEED)
    data = load_digits_16x16()
    rows, models, library = [], {}, None
    for method in METHODS:
        t0 = time.perf_counter()
        if method.connectivity is None:
            torch.manual_seed(SEED)
            model = digits_cnn()
            train(model, data[0], data[1], budget.dense_epochs, budget.lr, budget, SEED)
            library = digits_library(model)
        else:
            model, _ = compress(models["dense"], method, data, budget, library)
        models[method.name] = model.eval()
        rows.append(Row(method.name, "-" if method.connectivity is None else f"{method.connectivity:g}",
                        accuracy(model, data[2], data[3]), conv3x3_reduction(model), time.perf_counter() - t0))
        log(f"  {method.name}: {rows[-1].test_accuracy:.2f}% ({rows[-1].seconds:.1f} s)")
    if tvm_check:
        for name in ("admm", "admm_hi"):
            n, err, layers = check_tvm(models[name], data[2], library)
            log(f"  TVM pattern build of {name}: same predictions as PyTorch on all {n} test images, "
                f"relative max error {err:.1e}, pattern convs {layers}")
    return rows, models


def check_tvm(model: nn.Module, x: torch.Tensor, library: PatternLibrary) -> tuple[int, float, list[str]]:
    """Build ``model`` with the pattern kind and run it on ``x`` (one batch).

    AssertionError unless the predictions are PyTorch's; returns (images, relative max error of the
    logits, the convs that became pattern convs).
    """
    import tvm
    from tvm import relax

    import tvm_patterns as tp

    x = x.contiguous()
    report = []
    ex = tp.build(tp.from_pytorch(model.eval(), x), library=library, report=report)
    out = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x.numpy())).numpy()
    with torch.no_grad():
        ref = model(x).numpy()
    assert (out.argmax(1) == ref.argmax(1)).all(), "TVM and PyTorch predictions differ"
    err = float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30))
    return len(x), err, [r.layer for r in report if r.rewritten]


def format_table(rows: list[Row]) -> str:
    dense = rows[0].test_accuracy
    lines = [f"{'method':<9} {'connectivity':>12} {'test acc %':>10} {'vs dense':>9} {'3x3 reduction':>14} {'time s':>7}"]
    for r in rows:
        lines.append(f"{r.method:<9} {r.connectivity:>12} {r.test_accuracy:>10.2f} {r.test_accuracy - dense:>+9.2f} "
                     f"{r.conv3x3_reduction:>13.2f}x {r.seconds:>7.1f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", help="CSV file (default: OUT_DIR/compress_digits.csv)")
    ap.add_argument("--out-dir", default="out", help="folder of the CSV")
    ap.add_argument("--quick", action="store_true", help="a few epochs only (tests)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: this small network gains little from more, and loses much on a busy machine)")
    ap.add_argument("--tvm", action="store_true", help="also build the ADMM models with the pattern kind and compare")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rows, _ = run(QUICK if args.quick else Budget(), tvm_check=args.tvm)
    print(format_table(rows))
    print(f"total {time.perf_counter() - t0:.1f} s")
    path = args.csv or os.path.join(args.out_dir, "compress_digits.csv")
    write_csv(path, [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(r).items()} for r in rows])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
