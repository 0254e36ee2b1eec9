"""Compression quality on a real data set: every method side by side, at the same 3x3 weight budget.

    python scripts/compress_accuracy.py --data fashion-mnist|digits --csv FILE [--quick] [--nets vgg,resnet]
                                        [--table pruning|quantization] [--int8]

A small VGG-style CNN (3x3 convs only, one FC) and a small ResNet-style one (3x3 convs, 1x1
shortcuts) are trained dense once, then each trained dense model is compressed with every method at
8x and 16x fewer 3x3 weights and retrained:
  dense         the baseline
  unstructured  the smallest weights of each 3x3 conv removed (magnitude, per layer)
  filter        whole filters removed (L1 norm) with the next conv's input channels they fed: the
                coarse structured baseline (ResNet-style: inside each block, as usual for residuals)
  oneshot       pattern (8 patterns of 4 taps, fitted to the dense weights) + connectivity by
                projection, then masked retraining
  admm          pattern + connectivity by ADMM (rho grows from RHO to RHO_MAX over the ADMM epochs,
                four ADMM iterations an epoch), hard pruning, then masked retraining
  admm_fblock   admm with filter-block patterns: blocks of 4 filters share their kernels and patterns
                (the structure whose kernel reuses each input load across the block's filters)
  admm_block    admm, plus block pruning (rows of 8, 75%) of the 1x1 convs and the FC layer
The structured table (``--table structured``) compresses the linear layers of an MLP (784-512-256-10 on Fashion-MNIST,
the classifier kept dense) with the seeds' two matrix structures, by ADMM then retraining as admm:
  circulant       b x b block-circulant matrices (CirCNN), b = 8 and 16 (``reduction`` = b)
  column_combine  input channels combined in groups of g, one weight a row per group, g = 4 and 8
``reduction_layers`` is the compressed layers' dense weights over the values they keep.
The quantization table (``--table quantization``) puts the 3x3 convs' weights (the stem's too) on
each grid of ``sparsity.quantization`` at 4 bits, alone (``quantize``: the grid found on the dense
weights, then straight-through retraining) and on top of ``admm`` at 8x (ADMM projects onto pattern
+ connectivity + grid, then straight-through masked retraining); uniform 3-bit and Term
Quantization at the same stored bits (5-bit codes, 4 terms per 8 values) are reported beside them.
``weight_bits_3x3`` counts what a packed format stores of the 3x3 convs: values and indices (see
``weight_bits``).
Every method trains the same number of epochs after the dense model (ADMM: admm + retrain epochs;
the others: as many masked epochs), with the same seed, distilling the dense model's soft targets
(``Budget.distill``). The stem conv (one input channel) stays
dense in every method. Each compressed model is also built with the TVM pass (its pattern library
found from the weights) and its accuracy measured from that build on the first 1,000 test images,
beside PyTorch's on the same images. ``--int8`` builds each model in int8 too (``tp.calibrate`` on
CALIBRATION_BATCHES training batches; the filter-block convs (``admm_fblock``), block-pruned linear
layers and dense convs with enough MACs an element run in int8): its accuracy on those images and how
often its top-1 equals PyTorch's.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune

from tvm_patterns.apps import arguments, datasets
from tvm_patterns.apps.report import fmt_table, write_csv
from tvm_patterns.compress import ADMMPruner, oneshot_prune
from tvm_patterns.devices.timing import use_threads
from tvm_patterns.sparsity import PatternLibrary
from tvm_patterns.sparsity.pattern_format import NotPatternSparse, pack

SEED = 0
COLUMNS = ["data", "network", "method", "budget", "reduction_3x3", "reduction_total", "test_accuracy", "loss_vs_dense",
           "torch_accuracy_1k", "tvm_accuracy_1k", "tvm_sparse_layers", "train_seconds", "epochs", "seed"]
METHODS = ("unstructured", "filter", "oneshot", "admm", "admm_fblock", "admm_block")
FILTER_BLOCK = 4   # admm_fblock: filters per block sharing kernels and patterns
REDUCTIONS = (8, 16)
QUANT_COLUMNS = ["data", "network", "method", "scheme", "bits", "budget", "reduction_3x3", "weight_bits_3x3",
                 "weight_bits_ratio_3x3", "test_accuracy", "loss_vs_dense", "torch_accuracy_1k", "tvm_accuracy_1k",
                 "tvm_sparse_layers", "train_seconds", "epochs", "seed"]
# --int8: the int8 build of each model (x86 with AVX-512 VNNI or AVX2), calibrated on CALIBRATION_BATCHES training batches
INT8_COLUMNS = ["tvm_int8_accuracy_1k", "int8_top1_agreement_1k", "tvm_int8_layers"]
CALIBRATION_BATCHES = 8
GRIDS = {"uniform": {"scheme": "uniform", "bits": 4}, "pow2": {"scheme": "pow2", "bits": 4},
         "sp2": {"scheme": "sp2", "bits": 4}, "mixed": {"scheme": "mixed", "bits": 4},
         "term": {"scheme": "term", "bits": 4, "group": 8, "terms": 8}}
# uniform 3-bit, and Term Quantization storing as many bits (4 terms of 6 bits, sign + exponent +
# position, per 8 values): quantization alone
GRIDS_ALONE = {"uniform3": {"scheme": "uniform", "bits": 3}, "term3": {"scheme": "term", "bits": 5, "group": 8, "terms": 4}}
QUANT_REDUCTION = 8   # the pattern + connectivity budget the grids are combined with
BLOCK = {"block_rows": 8, "sparsity": 0.75}   # admm_block's 1x1 convs and FC layer
STRUCTURED = (("circulant", 8), ("circulant", 16), ("column_combine", 4), ("column_combine", 8))
STRUCT_COLUMNS = ["data", "network", "method", "budget", "reduction_layers", "reduction_total", "test_accuracy",
                  "loss_vs_dense", "torch_accuracy_1k", "tvm_accuracy_1k", "tvm_sparse_layers", "train_seconds",
                  "epochs", "seed"]


def native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 (AVX-512 BF16 or AMX): elsewhere oneDNN emulates it, and a
    bfloat16-autocast conv trains 8x slower than in float32 (Zen 3, measured)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass(frozen=True)
class Budget:
    train_images: int | None = 20000   # a class-balanced subset of Fashion-MNIST's 60,000 (None: all)
    dense_epochs: int = 10
    admm_epochs: int = 3
    retrain_epochs: int = 3
    batch: int = 128
    lr: float = 2e-3
    retrain_lr: float = 2e-3
    rho: float = 3e-2
    rho_max: float = 10.0
    admm_steps_per_epoch: int = 4
    distill: float = 0.7          # weight of the dense model's soft targets in compressed training (0: none)
    temperature: float = 4.0      # of those soft targets
    bf16: bool = field(default_factory=native_bf16)   # train in bfloat16 autocast (the weights stay float32)
                                                      # where the CPU has it: 1.5-2.7x faster (Sapphire Rapids)


QUICK = Budget(train_images=600, dense_epochs=1, admm_epochs=1, retrain_epochs=1, batch=64)


# ----------------------------------------------------------------------------- networks

def conv_bn(cin, cout, stride=1):
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def vgg_style(width: int = 16) -> nn.Module:
    """3x3 convs only, c-c-2c-2c-4c-4c channels, two max pools, global average pool, one FC."""
    c = width
    return nn.Sequential(*conv_bn(1, c), *conv_bn(c, c), nn.MaxPool2d(2), *conv_bn(c, 2 * c), *conv_bn(2 * c, 2 * c),
                         nn.MaxPool2d(2), *conv_bn(2 * c, 4 * c), *conv_bn(4 * c, 4 * c),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * c, 10))


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNetStyle(nn.Module):
    """A stem, then c, 2c (stride 2) and 4c (stride 2) stages of two basic blocks each, one FC."""

    def __init__(self, width: int = 16):
        super().__init__()
        c = width
        self.stem = nn.Sequential(*conv_bn(1, c))
        self.blocks = nn.Sequential(Block(c, c, 1), Block(c, c, 1), Block(c, 2 * c, 2), Block(2 * c, 2 * c, 1),
                                    Block(2 * c, 4 * c, 2), Block(4 * c, 4 * c, 1))
        self.fc = nn.Linear(4 * c, 10)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1))


def mlp(width: int = 512) -> nn.Module:
    """pixels (784 for Fashion-MNIST) -> width -> width / 2 -> 10 linear layers with ReLUs (the structured
    table's network; the first layer takes its input size from the first batch)."""
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(width), nn.ReLU(), nn.Linear(width, width // 2), nn.ReLU(),
                         nn.Linear(width // 2, 10))


NETWORKS = {"vgg": vgg_style, "resnet": ResNetStyle, "mlp": mlp}
WIDTHS = {"vgg": 32, "resnet": 16, "mlp": 512}   # channels of the first stage (the 32-32-64-64-128-128 VGG)


def convs3x3(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]


def pruned_3x3(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """The 3x3 convs every method compresses: all but the stem (one input channel)."""
    return [(n, m) for n, m in convs3x3(model) if m.in_channels > 1]


def filter_pairs(model: nn.Module) -> list[tuple[str, str | None]]:
    """(conv whose filters go, conv whose input channels they fed): a VGG chain conv to conv, inside
    each residual block conv1 to conv2 (the residual stream keeps its width)."""
    names = [n for n, _ in pruned_3x3(model)]
    if isinstance(model, ResNetStyle):
        return [(n, n.replace("conv1", "conv2")) for n in names if n.endswith("conv1")]
    return [(a, b) for a, b in zip(names, names[1:] + [None])]


def block_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1))]


# ----------------------------------------------------------------------------- counting

def structured_layers(model: nn.Module) -> list[str]:
    """The linear layers the structured table compresses: all but the classifier (10 outputs)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features != 10]


def kept_values(m: nn.Module, method: str, budget: int) -> int:
    """The values a compressed layer stores: b per b x b circulant block, else its nonzeros."""
    return m.weight.numel() // budget if method == "circulant" else nonzero(m)


def nonzero(m: nn.Module) -> int:
    return int((m.weight != 0).sum())


def reduction_3x3(model: nn.Module) -> float:
    ws = [m for _, m in convs3x3(model)]
    return sum(m.weight.numel() for m in ws) / max(1, sum(nonzero(m) for m in ws))


def reduction_total(model: nn.Module) -> float:
    ws = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return sum(m.weight.numel() for m in ws) / max(1, sum(nonzero(m) for m in ws))


def value_bits(counts: np.ndarray, quantize: dict | None) -> int:
    """Bits of a layer's stored values, ``counts[k]`` of them in channel k: 32 each as float; on a
    grid, a code of ``bits`` each plus the channel's float32 scale (mixed: and one bit for its grid).
    Term: the fewer of the codes and the kept terms (sign, exponent, position in the group each)."""
    if quantize is None:
        return 32 * int(counts.sum())
    bits = quantize["bits"]
    per_channel = bits * counts + 32 + (quantize["scheme"] == "mixed")
    if quantize["scheme"] == "term":
        group = quantize.get("group", 8)
        term = 1 + math.ceil(math.log2(max(2, bits - 1))) + math.ceil(math.log2(max(2, group)))
        terms = -(-counts // group) * quantize.get("terms", 12) * term + 32
        per_channel = np.minimum(per_channel, terms)
    return int(per_channel.sum())


def weight_bits(w: np.ndarray, library: PatternLibrary, quantize: dict | None) -> int:
    """Bits of a 3x3 conv weight [K, C, 3, 3] as stored: dense, or packed by pattern (the fewer). Packed
    (``sparsity.pattern_format``): per kept kernel its taps, input channel and pattern id; per filter
    its kernel count."""
    K, C = w.shape[:2]
    dense = value_bits(np.full(K, C * 9), quantize)
    try:
        packed = pack(w, library)
    except NotPatternSparse:
        return dense
    index = (packed.nnz_kernels * (math.ceil(math.log2(C)) + math.ceil(math.log2(library.size)))
             + K * math.ceil(math.log2(C + 1)))
    return min(dense, value_bits(np.diff(packed.kernel_ptr) * library.taps, quantize) + index)


def weight_bits_3x3(model: nn.Module, library: PatternLibrary, quantize: dict | None) -> int:
    return sum(weight_bits(m.weight.detach().numpy(), library, quantize) for _, m in convs3x3(model))


def kept_share(model: nn.Module, reduction: float) -> float:
    """The share of the compressed convs' weights to keep so that all 3x3 weights fall ``reduction``x
    (the stem's stay)."""
    total = sum(m.weight.numel() for _, m in convs3x3(model))
    pruned = sum(m.weight.numel() for _, m in pruned_3x3(model))
    share = (total / reduction - (total - pruned)) / pruned
    if not 0 < share <= 1:
        raise ValueError(f"a {reduction}x reduction of the 3x3 weights is out of reach with a dense stem")
    return share


# ----------------------------------------------------------------------------- masks

def unstructured_masks(model: nn.Module, share: float) -> dict[str, torch.Tensor]:
    masks = {}
    for name, m in pruned_3x3(model):
        w = m.weight.detach().abs().flatten()
        keep = max(1, round(share * w.numel()))
        masks[name] = (m.weight.detach().abs() >= w.topk(keep).values.min()).float()
    return masks


def filter_masks(model: nn.Module, kept_filters: float) -> dict[str, torch.Tensor]:
    """Each conv of ``filter_pairs`` keeps the ``kept_filters`` share of its filters with the largest
    L1 norm; the convs they fed lose the matching input channels."""
    modules = dict(model.named_modules())
    masks = {n: torch.ones_like(m.weight) for n, m in pruned_3x3(model)}
    for producer, consumer in filter_pairs(model):
        w = modules[producer].weight.detach()
        keep = max(1, math.ceil(kept_filters * w.shape[0]))
        dropped = w.abs().sum(dim=(1, 2, 3)).argsort(descending=True)[keep:]
        masks[producer][dropped] = 0
        if consumer is not None:
            masks[consumer][:, dropped] = 0
    return masks


def filter_share_for(model: nn.Module, reduction: float) -> float:
    """The share of filters to keep for a ``reduction``x smaller 3x3 weight count (bisection)."""
    total = sum(m.weight.numel() for _, m in convs3x3(model))
    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        kept = total - sum(int((1 - mask).sum()) for mask in filter_masks(model, mid).values())
        lo, hi = (mid, hi) if total / kept > reduction else (lo, mid)
    return hi


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        torch_prune.custom_from_mask(modules[name], "weight", mask)


def remove_masks(model: nn.Module) -> None:
    for m in model.modules():
        if torch_prune.is_pruned(m) and hasattr(m, "weight_orig"):
            torch_prune.remove(m, "weight")


def pattern_config(model: nn.Module, share: float, block: bool, filter_block: int = 0,
                   quantize: dict | None = None) -> list[dict]:
    """Pattern (4 of 9 taps) + connectivity at the rate that keeps ``share`` of the weights (with
    ``filter_block``: shared by blocks of that many filters; with ``quantize``: every 3x3 conv's
    weights, the dense stem's too, on that grid)."""
    connectivity = (4 / 9) / share
    kind = {"kind": "filter_block_pattern", "filters": filter_block} if filter_block else {"kind": "pattern"}
    config = [{"module": n, **kind, "patterns": 8, "taps": 4, "connectivity": connectivity}
              for n, _ in pruned_3x3(model)]
    if quantize is not None:
        config = [{**c, "quantize": quantize} for c in config] + quantize_config(model, quantize, stem_only=True)
    if block:
        config += [{"module": n, "kind": "block", **BLOCK} for n in block_layers(model)]
    return config


def quantize_config(model: nn.Module, quantize: dict, stem_only: bool = False) -> list[dict]:
    """The 3x3 convs (or the stem alone) on ``quantize``'s grid, nothing pruned."""
    pruned = {n for n, _ in pruned_3x3(model)} if stem_only else set()
    return [{"module": n, "kind": "dense", "quantize": quantize} for n, _ in convs3x3(model) if n not in pruned]


# ----------------------------------------------------------------------------- training

def train(model, x, y, epochs: int, lr: float, budget: Budget, seed: int, pruner: ADMMPruner | None = None,
          teacher: torch.Tensor | None = None):
    """Adam with a cosine schedule; with an ADMM pruner, its penalty joins the loss and it takes
    ``admm_steps_per_epoch`` ADMM steps an epoch; with a teacher (the dense model's ``logits`` of
    every training image), its soft targets join the loss at weight ``budget.distill`` (knowledge distillation, Hinton et al.)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    batches = -(-len(y) // budget.batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs * batches))
    every = max(1, batches // budget.admm_steps_per_epoch)
    # channels-last convs train about 1.5x faster on this CPU; the parameters stay the same objects
    model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
    for _ in range(epochs):
        model.train()
        for i, idx in enumerate(torch.randperm(len(y), generator=g).split(budget.batch)):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=budget.bf16):
                out = model(x[idx]).float()
            loss = F.cross_entropy(out, y[idx])
            if teacher is not None and budget.distill > 0:
                soft = F.softmax(teacher[idx] / budget.temperature, dim=1)
                kd = F.kl_div(F.log_softmax(out / budget.temperature, dim=1), soft, reduction="batchmean")
                loss = (1 - budget.distill) * loss + budget.distill * budget.temperature ** 2 * kd
            if pruner is not None:
                loss = loss + pruner.penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if pruner is not None and (i + 1) % every == 0:
                pruner.step()
    model.to(memory_format=torch.contiguous_format)


@torch.no_grad()
def logits(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """The model's logits of ``x`` (the dense teacher's of the training set are computed once: the data
    is not augmented, so every method distils from the same soft targets)."""
    model.eval()
    return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


def predictions(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    return logits(model, x, batch).argmax(1)


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * float((pred == y).float().mean())


def compress(dense: nn.Module, method: str, reduction: float | None, data, budget: Budget,
             teacher: torch.Tensor | None = None, quantize: dict | None = None) -> nn.Module:
    """A compressed, retrained copy of ``dense`` (masks baked in); ``teacher``: the dense model's
    logits of the training images, distilled at ``budget.distill``; ``quantize``: the 3x3 convs'
    grid (method ``quantize``: that alone; ``admm``: with pattern + connectivity)."""
    xtr, ytr = data[0], data[1]
    model = copy.deepcopy(dense)
    torch.manual_seed(SEED)
    epochs = budget.admm_epochs + budget.retrain_epochs
    if method == "quantize":
        pruner = oneshot_prune(model, quantize_config(model, quantize))
        train(model, xtr, ytr, epochs, budget.retrain_lr, budget, SEED + 2, teacher=teacher)
        pruner.squash()
        return model
    if method in ("circulant", "column_combine"):
        key = "block" if method == "circulant" else "group"
        config = [{"module": n, "kind": method, key: reduction} for n in structured_layers(model)]
        return admm(model, config, None, data, budget, teacher)
    if quantize is not None and method != "admm":
        raise ValueError(f"method {method!r} takes no quantizer (quantize or admm do)")
    share = kept_share(model, reduction)
    if method in ("admm", "admm_fblock", "admm_block"):
        config = pattern_config(model, share, method == "admm_block", FILTER_BLOCK if method == "admm_fblock" else 0,
                                quantize)
        return admm(model, config, library(dense), data, budget, teacher)
    if method == "oneshot":
        pruner = oneshot_prune(model, pattern_config(model, share, False), library(dense))
    elif method == "unstructured":
        apply_masks(model, unstructured_masks(model, share))
    elif method == "filter":
        apply_masks(model, filter_masks(model, filter_share_for(model, reduction)))
    else:
        raise ValueError(f"unknown method {method!r} (one of dense, {', '.join(METHODS)})")
    train(model, xtr, ytr, epochs, budget.retrain_lr, budget, SEED + 2, teacher=teacher)
    if method == "oneshot":
        pruner.squash()
    else:
        remove_masks(model)
    return model


def admm(model: nn.Module, config: list[dict], lib: PatternLibrary | None, data, budget: Budget,
         teacher: torch.Tensor | None) -> nn.Module:
    """``model`` compressed to ``config`` by ADMM (rho grows from budget.rho to budget.rho_max over the
    ADMM steps), hard-pruned, then retrained with the masks; returned with them baked in."""
    xtr, ytr = data[0], data[1]
    steps = budget.admm_epochs * budget.admm_steps_per_epoch
    growth = (budget.rho_max / budget.rho) ** (1 / max(1, steps - 1))
    pruner = ADMMPruner(model, config, lib, rho=budget.rho, rho_growth=growth, rho_max=budget.rho_max)
    train(model, xtr, ytr, budget.admm_epochs, budget.lr, budget, SEED + 1, pruner, teacher)
    pruner.prune()
    train(model, xtr, ytr, budget.retrain_epochs, budget.retrain_lr, budget, SEED + 2, teacher=teacher)
    pruner.squash()
    return model


def library(dense: nn.Module) -> PatternLibrary | None:
    """The dense network's 8 most frequent 4-tap patterns: one library for every pattern method (None
    for a network without pruned 3x3 convs)."""
    if not pruned_3x3(dense):
        return None
    return PatternLibrary.extract([m.weight.detach().numpy() for _, m in pruned_3x3(dense)], 8, 4)


def tvm_predictions(model: nn.Module, x: torch.Tensor, batch: int = 100, int8=None) -> tuple[torch.Tensor, int]:
    """Predictions of the TVM build of ``model`` (sparse kinds found from the weights; with ``int8``,
    ``tp.calibrate``'s ranges, the layers the int8 kernels run in int8) and how many of its layers the
    build rewrote (with ``int8``: how many it ran in int8)."""
    import tvm
    from tvm import relax

    import tvm_patterns as tp

    report = []
    ex = tp.build(tp.from_pytorch(model.eval(), x[:batch].contiguous()), report=report, int8=int8)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = [vm["main"](tvm.runtime.tensor(x[i:i + batch].contiguous().numpy())).numpy().argmax(1)
           for i in range(0, len(x) - len(x) % batch, batch)]
    counted = [r for r in report if str(r.kind).startswith("int8_")] if int8 is not None else \
        [r for r in report if r.rewritten]
    return torch.from_numpy(np.concatenate(out)), len(counted)


# ----------------------------------------------------------------------------- the table

def load(name: str, budget: Budget):
    if name == "fashion-mnist":
        return datasets.fashion_mnist(train_limit=budget.train_images, seed=SEED)
    if name == "digits":
        return datasets.digits(seed=SEED)
    raise ValueError(f"unknown data set {name!r} (fashion-mnist or digits)")


def pruning_jobs(methods=METHODS, reductions=REDUCTIONS) -> list[tuple]:
    """The pruning table's models after the dense one: (method, 3x3 reduction, grid)."""
    return [(m, r, None) for r in reductions for m in methods]


def structured_jobs() -> list[tuple]:
    """The structured table's: each matrix structure at each of its parameters."""
    return [(method, param, None) for method, param in STRUCTURED]


def quantization_jobs() -> list[tuple]:
    """The quantization table's: admm at 8x in float, every grid alone, every 4-bit grid on admm at 8x."""
    return ([("admm", QUANT_REDUCTION, None)] + [("quantize", None, g) for g in (*GRIDS.values(), *GRIDS_ALONE.values())]
            + [("admm", QUANT_REDUCTION, g) for g in GRIDS.values()])


def run(data_name: str, nets, budget: Budget, jobs=None, width: int | None = None,
        tvm_images: int = 1000, log=print, done=lambda row: None, int8: bool = False) -> list[dict]:
    """Rows of the table (see COLUMNS and QUANT_COLUMNS; ``int8``: INT8_COLUMNS too), dense first, then
    one a job of ``jobs`` (default ``pruning_jobs()``); ``done(row)`` is called as each one is ready."""
    data = load(data_name, budget)
    calibration = [data[0][i * 100:(i + 1) * 100] for i in range(CALIBRATION_BATCHES)] if int8 else None
    test = (data[2], data[3], min(tvm_images, len(data[3])) // 100 * 100 or len(data[3]))
    epochs = budget.admm_epochs + budget.retrain_epochs
    rows = []
    for net in nets:
        torch.manual_seed(SEED)
        dense = NETWORKS[net](width or WIDTHS[net])
        with torch.no_grad():   # lazy layers take their sizes from a batch (eval: no statistics updated)
            dense.eval()(data[0][:2])
        t0 = time.perf_counter()
        train(dense, data[0], data[1], budget.dense_epochs, budget.lr, budget, SEED)
        base = {"data": data_name, "network": net, "seed": SEED}
        lib = library(dense)
        dense_row = finish({**base, "method": "dense", "budget": ""}, dense, time.perf_counter() - t0,
                           budget.dense_epochs, None, test, log, lib, calibration=calibration)
        rows.append(dense_row)
        done(dense_row)
        teacher = logits(dense, data[0]) if budget.distill > 0 else None
        for method, reduction, grid in (pruning_jobs() if jobs is None else jobs):
            t0 = time.perf_counter()
            model = compress(dense, method, reduction, data, budget, teacher, grid)
            rows.append(finish({**base, "method": method, "budget": reduction or ""}, model,
                               time.perf_counter() - t0, epochs, dense_row, test, log, lib, grid, calibration))
            done(rows[-1])
    return rows


def finish(base: dict, model: nn.Module, seconds: float, epochs: int, dense: dict | None, test, log,
           lib: PatternLibrary, grid: dict | None = None, calibration=None) -> dict:
    """The row of one trained model: its accuracies (PyTorch on the test set and on its first
    ``n1k`` images; the TVM build on those), reductions, stored 3x3 weight bits (on ``grid``, if
    quantized), and the loss against the ``dense`` row. With ``calibration`` (training batches) the
    int8 build too (INT8_COLUMNS)."""
    xte, yte, n1k = test
    acc = accuracy(predictions(model, xte), yte)
    dense_acc = acc if dense is None else dense["test_accuracy"]
    torch_1k = accuracy(predictions(model, xte[:n1k]), yte[:n1k])
    tvm_pred, sparse_layers = tvm_predictions(model, xte[:n1k])
    bits = weight_bits_3x3(model, lib, grid) if lib is not None else 0
    float_bits = 32 * sum(m.weight.numel() for _, m in convs3x3(model))
    scheme = "float" if grid is None else grid["scheme"] + "".join(f" {k}={grid[k]}" for k in ("group", "terms") if k in grid)
    row = {**base, "scheme": scheme, "bits": 32 if grid is None else grid["bits"],
           "reduction_3x3": reduction_3x3(model), "reduction_total": reduction_total(model),
           "weight_bits_3x3": bits, "weight_bits_ratio_3x3": float_bits / bits if bits else float("nan"),
           "test_accuracy": acc, "loss_vs_dense": dense_acc - acc, "torch_accuracy_1k": torch_1k,
           "tvm_accuracy_1k": accuracy(tvm_pred, yte[:n1k]), "tvm_sparse_layers": sparse_layers,
           "train_seconds": seconds, "epochs": epochs}
    if base["method"] in ("circulant", "column_combine") or not convs3x3(model):
        layers = [dict(model.named_modules())[n] for n in structured_layers(model)]
        kept = sum(kept_values(m, base["method"], base["budget"]) if base["budget"] else m.weight.numel() for m in layers)
        dense_params = sum(m.weight.numel() for m in layers)
        total = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
        row.update(reduction_layers=dense_params / kept, reduction_total=total / (total - dense_params + kept))
    if calibration is not None:
        import tvm_patterns as tp

        int8_pred, int8_layers = tvm_predictions(model, xte[:n1k], int8=tp.calibrate(model, calibration))
        row.update({"tvm_int8_accuracy_1k": accuracy(int8_pred, yte[:n1k]), "tvm_int8_layers": int8_layers,
                    "int8_top1_agreement_1k": 100.0 * float((int8_pred == predictions(model, xte[:n1k])).float().mean())})
        log(f"  {base['network']} {base['method']:12s} int8 build: {int8_layers} int8 layers, 1k accuracy "
            f"{row['tvm_int8_accuracy_1k']:.1f}%, top-1 as PyTorch's on {row['int8_top1_agreement_1k']:.1f}%")
    reduced = (f"3x3 {row['reduction_3x3']:5.1f}x {row['weight_bits_ratio_3x3']:5.1f}x fewer bits" if bits
               else f"layers {row.get('reduction_layers', 1.0):5.1f}x fewer weights")
    log(f"  {base['network']} {base['method']:12s} {scheme:18s} {reduced}  test {acc:6.2f}%  "
        f"1k: torch {torch_1k:.1f}% tvm {row['tvm_accuracy_1k']:.1f}% ({sparse_layers} sparse layers)  "
        f"{seconds:.0f} s")
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="fashion-mnist", choices=["fashion-mnist", "digits"])
    ap.add_argument("--csv", required=True)
    ap.add_argument("--nets", default="vgg,resnet")
    ap.add_argument("--methods", default=",".join(METHODS), help="the pruning table's methods")
    ap.add_argument("--table", default="pruning", choices=["pruning", "quantization", "structured"],
                    help="pruning: every method at 8x and 16x; quantization: every grid, alone and with admm at 8x; "
                         "structured: circulant and column combining on an MLP's linear layers (--nets mlp)")
    ap.add_argument("--width", type=int, default=None,
                    help=f"channels of the first stage (default {', '.join(f'{n} {w}' for n, w in WIDTHS.items())})")
    ap.add_argument("--quick", action="store_true", help="a few hundred images and one epoch each (tests)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--int8", action="store_true",
                    help="also the int8 build of each model (x86 with AVX-512 VNNI or AVX2): its accuracy and top-1 agreement")
    args = ap.parse_args(argv)
    nets = [n for n in args.nets.split(",") if n]
    methods = [m for m in args.methods.split(",") if m]
    for flag, given, known in (("--nets", nets, NETWORKS), ("--methods", methods, METHODS)):
        bad = [g for g in given if g not in known]
        if bad or not given:
            ap.error(f"{flag}: {'unknown ' + ', '.join(bad) if bad else 'none given'} (choose from {', '.join(known)})")
    arguments.at_least(ap, args, 1, "threads", "width")
    use_threads(args.threads)
    budget = QUICK if args.quick else Budget()
    try:
        load(args.data, budget)
    except FileNotFoundError as e:
        ap.error(str(e))
    t0 = time.perf_counter()
    print(f"{args.data}: {budget}", flush=True)
    rows = []
    columns = ({"pruning": COLUMNS, "quantization": QUANT_COLUMNS, "structured": STRUCT_COLUMNS}[args.table]
               + (INT8_COLUMNS if args.int8 else []))
    if args.table == "structured" and args.nets == ap.get_default("nets"):
        nets = ["mlp"]
    if args.table != "structured" and "mlp" in nets or args.table == "structured" and nets != ["mlp"]:
        ap.error("--nets: the mlp runs the structured table, and the structured table runs the mlp only")

    def done(row):
        rows.append(row)
        write_csv(args.csv, [{c: row[c] for c in columns} for row in rows])

    jobs = {"pruning": lambda: pruning_jobs(methods), "quantization": quantization_jobs,
            "structured": structured_jobs}[args.table]()
    run(args.data, nets, budget, jobs, width=args.width, done=done, int8=args.int8)
    print(fmt_table(rows, ["budget", "network", "method", "scheme", "reduction_3x3" if args.table != "structured"
                           else "reduction_layers", "weight_bits_ratio_3x3",
                           "test_accuracy", "loss_vs_dense", "torch_accuracy_1k", "tvm_accuracy_1k", "train_seconds"]
                    + (INT8_COLUMNS if args.int8 else [])))
    print(f"total {time.perf_counter() - t0:.0f} s; wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
