"""One-shot PatDNN-style pruning of a PyTorch model's 3x3 convs by projection (no training)."""
from __future__ import annotations

import torch
from torch import nn

from .sparsity import PatternLibrary, project_pattern_connectivity


def prunable_3x3_convs(model: nn.Module, skip_first: bool = True) -> list[tuple[str, nn.Conv2d]]:
    """The 3x3, groups=1 convs; the first conv of the network (3 input channels) is usually kept dense."""
    convs = [(n, m) for n, m in model.named_modules()
             if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.groups == 1]
    if skip_first:
        convs = [(n, m) for n, m in convs if m.in_channels > 3]
    return convs


@torch.no_grad()
def pattern_prune(model: nn.Module, library: PatternLibrary | None = None, connectivity: float = 3.6,
                  skip_first: bool = True) -> list[str]:
    """Project every prunable 3x3 conv weight in place; returns the pruned module names."""
    library = library or PatternLibrary.patdnn()
    names = []
    for name, conv in prunable_3x3_convs(model, skip_first):
        w = conv.weight.detach().cpu().numpy()
        conv.weight.copy_(torch.from_numpy(project_pattern_connectivity(w, library, connectivity)))
        names.append(name)
    return names
