"""``from_pytorch``: torch.export -> Relax with the (compressed) weights bound as constants."""
from __future__ import annotations

from collections import Counter

import torch
import tvm
from tvm.relax.frontend.torch import from_exported_program

from .passes.rewrite import LAYER_NAMES_ATTR, mask_key, weight_key


def from_pytorch(model: torch.nn.Module, example_inputs) -> tvm.IRModule:
    """Import a PyTorch model in eval mode; weights become Relax constants.

    ``torch.nn.utils.prune`` masks and parametrizations are traced as ``weight_orig * weight_mask``
    of two constants, which the build's FoldConstant turns into the pruned weight. The module
    records which torch module each conv / linear weight came from, so the rewrite pass reports
    layers by their torch names ("features.3").
    """
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    model = model.eval()
    with torch.no_grad():
        ep = torch.export.export(model, tuple(example_inputs))
        weights = {}
        for name, module in model.named_modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                w = module.weight.detach().cpu().numpy()   # the effective (masked) weight
                weights[name] = w.T if isinstance(module, torch.nn.Linear) else w  # linear: imported transposed
    names = {weight_key(w): name for name, w in weights.items()}
    masks = Counter(mask_key(w) for w in weights.values())
    names.update({mask_key(w): name for name, w in weights.items() if masks[mask_key(w)] == 1})
    mod = from_exported_program(ep, unwrap_unit_return_tuple=True)
    return mod.with_attr(LAYER_NAMES_ATTR, names)
