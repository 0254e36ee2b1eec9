"""Hard masks through ``torch.nn.utils.prune``, and the one-shot path (projection + masks).

    pruner = oneshot_prune(model, [{"module": "features.3", "kind": "pattern", "connectivity": 3.6}])
    ...fine-tune: the masks keep the pruned weights at zero...
    pruner.squash()

``pattern_prune(model)`` is the same path for every prunable 3x3 conv at once, masks baked in
(PatDNN's recipe without retraining, as the demo and benchmarks prune).
"""
from __future__ import annotations

import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

from tvm_patterns.sparsity import PatternLibrary
from tvm_patterns.sparsity.quantization import Grid, fit_grid

from .kinds import Constraint, parse_config
from .projections import snap


class MaskPruner:
    """Projects configured weights and holds them there with standard prune masks.

    After ``prune()`` every configured module has ``weight_orig`` (a parameter, the one the
    optimizer already knows) and ``weight_mask`` (a buffer), and ``weight = weight_orig * weight_mask``
    is recomputed before each forward, so masked retraining keeps the zeros; an entry with
    ``quantize`` then has its weight quantized in the forward, straight through in the backward.
    ``squash()`` bakes the masks (``torch.nn.utils.prune.remove``) and the quantization in: plain
    ``weight`` parameters again.
    """

    def __init__(self, model: nn.Module, config, library: PatternLibrary | None = None):
        self.model = model
        self.constraints: list[Constraint] = parse_config(model, config, library)
        self.masks: dict[str, torch.Tensor] = {}
        self._quantizers: dict[str, object] = {}   # module name: its forward pre-hook (entries with quantize)
        self._grids: dict[str, Grid] = {}          # module name: the grid found at prune() (per-channel scales)
        self._hooks: dict[str, object] = {}        # module name: the forward pre-hook of a tied kind (circulant)

    @property
    def pattern_library(self) -> PatternLibrary:
        """The one pattern library of the "pattern" entries (what the TVM build needs as ``library``)."""
        libs = {c.library for c in self.constraints if c.library is not None}
        if len(libs) != 1:
            raise ValueError(f"the configuration uses {len(libs)} pattern libraries, not one")
        return libs.pop()

    @property
    def pruned(self) -> bool:
        return bool(self.masks)

    @torch.no_grad()
    def prune(self) -> dict[str, torch.Tensor]:
        """Mask = support of the projection of the current weight; returns {module name: mask}."""
        if self.pruned:
            raise RuntimeError("prune() was already called")
        for c in self.constraints:
            if c.tied:   # nothing zeroed: the weight starts on the structure, the forward sees its projection
                c.weight.copy_(c.project(c.weight))
                mask = torch.ones_like(c.weight)
            else:
                mask = (c.project(c.weight) != 0).to(c.weight.dtype)
            torch_prune.custom_from_mask(c.module, "weight", mask)
            self.masks[c.name] = c.module.weight_mask
            if c.tied:   # after the mask's hook
                self._hooks[c.name] = c.module.register_forward_pre_hook(_tied_forward(c.project))
            if c.quantize is not None:   # after the mask's hook: the masked weight, then its grid
                grid = fit_grid(c.module.weight.detach().float().cpu().numpy(), **c.quantize)
                self._grids[c.name] = grid
                self._quantizers[c.name] = c.module.register_forward_pre_hook(_straight_through(grid))
        return dict(self.masks)

    def squash(self) -> None:
        """Bake the masks into the weights; the modules lose their prune hooks."""
        if not self.pruned:
            raise RuntimeError("squash() before prune(): there are no masks to bake in")
        for c in self.constraints:
            if torch_prune.is_pruned(c.module) and hasattr(c.module, "weight_orig"):
                torch_prune.remove(c.module, "weight")
            tied = self._hooks.pop(c.name, None)
            if tied is not None:
                tied.remove()
                with torch.no_grad():
                    c.module.weight.copy_(c.project(c.module.weight))
            hook = self._quantizers.pop(c.name, None)
            if hook is not None:
                hook.remove()
                with torch.no_grad():
                    c.module.weight.copy_(snap(c.module.weight, self._grids.pop(c.name)))


def _tied_forward(project):
    """Forward pre-hook of a tied kind's retraining: the forward sees the weight's (differentiable)
    projection, so each gradient step moves the tied values together and the structure holds."""
    def hook(module, inputs):
        module.weight = project(module.weight)
    return hook


def _straight_through(grid: Grid):
    """Forward pre-hook of masked retraining with a quantizer: the forward sees the weight on ``grid``
    (the scales found at prune(): no search per step), the gradient reaches the float weight
    unchanged (the straight-through estimator)."""
    def hook(module, inputs):
        w = module.weight
        module.weight = w + (snap(w, grid) - w).detach()
    return hook


def oneshot_prune(model: nn.Module, config, library: PatternLibrary | None = None) -> MaskPruner:
    """Project each configured weight and mask it, in place; fine-tune afterwards to recover accuracy.

    Returns the MaskPruner holding the masks (``squash()`` it after fine-tuning).
    """
    pruner = MaskPruner(model, config, library)
    pruner.prune()
    return pruner


def prunable_3x3_convs(model: nn.Module, skip_first: bool = True) -> list[tuple[str, nn.Conv2d]]:
    """The 3x3, groups=1 convs; the first conv of the network (3 input channels) is usually kept dense."""
    convs = [(n, m) for n, m in model.named_modules()
             if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.groups == 1]
    if skip_first:
        convs = [(n, m) for n, m in convs if m.in_channels > 3]
    return convs


def pattern_prune(model: nn.Module, library: PatternLibrary | None = None, connectivity: float = 3.6,
                  skip_first: bool = True) -> list[str]:
    """Pattern + connectivity projection of every prunable 3x3 conv, in place, masks baked in
    (``oneshot_prune`` then ``squash``); returns the pruned module names.
    library: default PatDNN's 8 patterns of 4 taps."""
    names = [n for n, _ in prunable_3x3_convs(model, skip_first)]
    if names:
        oneshot_prune(model, [{"module": n, "kind": "pattern", "connectivity": connectivity} for n in names],
                      library or PatternLibrary.patdnn()).squash()
    return names
