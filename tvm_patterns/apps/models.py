"""Reference networks in plain PyTorch (no torchvision): VGG-16, ResNet-18/50, MobileNet-V2.

Random weights are enough for latency; BatchNorm is folded into the convs by the build.
"""
from __future__ import annotations

import torch
from torch import nn

from ..compress import oneshot_prune, whole_network_config
from ..importer import from_pytorch
from ..sparsity import PatternLibrary

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg16(num_classes: int = 1000, image_size: int = 224) -> nn.Module:
    layers, c = [], 3
    for v in VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
            c = v
    side = image_size // 32
    return nn.Sequential(nn.Sequential(*layers), nn.Flatten(),
                         nn.Linear(512 * side * side, 4096), nn.ReLU(inplace=True),
                         nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, num_classes))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(cin, planes, stride)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1):
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.shortcut = _shortcut(cin, out, stride)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        return torch.relu(self.bn3(self.conv3(y)) + self.shortcut(x))


def _shortcut(cin, cout, stride):
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNet(nn.Module):
    def __init__(self, block, depths, num_classes=1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stages, cin = [], 64
        for i, depth in enumerate(depths):
            planes = 64 * 2 ** i
            for j in range(depth):
                stages.append(block(cin, planes, 2 if (j == 0 and i > 0) else 1))
                cin = planes * block.expansion
        self.layers = nn.Sequential(*stages)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def resnet18(num_classes: int = 1000, image_size: int = 224) -> nn.Module:
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes)


def resnet50(num_classes: int = 1000, image_size: int = 224) -> nn.Module:
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


# (expansion, channels, repeats, first stride)
MOBILENET_V2_CFG = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                    (6, 160, 3, 2), (6, 320, 1, 1)]


def mobilenet_v2(num_classes: int = 1000, image_size: int = 224) -> nn.Module:
    layers, cin = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6()], 32
    for t, c, n, s in MOBILENET_V2_CFG:
        for i in range(n):
            layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
            cin = c
    layers += [nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6(),
               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, num_classes)]
    return nn.Sequential(*layers)


NETWORKS = {"vgg16": vgg16, "resnet18": resnet18, "resnet50": resnet50, "mobilenet_v2": mobilenet_v2}


def get_network(name: str, image_size: int = 224, seed: int = 0) -> nn.Module:
    """A network with random weights and random BatchNorm statistics, in eval mode."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose one of {sorted(NETWORKS)}")
    torch.manual_seed(seed)
    model = NETWORKS[name](image_size=image_size)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model.eval()


def conv3x3_layers(net: str, image: int, filter_block: int = 0) -> list[tuple[str, nn.Conv2d, tuple]]:
    """(name, conv, input shape) of every 3x3 conv of a reference network pattern-pruned as the
    demo prunes its 3x3 convs (``filter_block``: in blocks of that many filters sharing structure),
    with its real input size: the per-layer benchmarks' layers."""
    model = get_network(net, image)
    config = whole_network_config(model, filter_block=filter_block)
    oneshot_prune(model, [e for e in config if e["kind"] in ("pattern", "filter_block_pattern")],
                  PatternLibrary.patdnn()).squash()
    shapes = {}

    def record(name):
        def hook(module, inputs, output):
            shapes.setdefault(name, tuple(inputs[0].shape))
        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(torch.randn(1, 3, image, image))
    for h in hooks:
        h.remove()
    return [(n, m, shapes[n]) for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]


def compress_network(model: nn.Module, connectivity: float = 3.6, sparsity: float = 0.75,
                     dense: list | None = None, filter_block: int = 0) -> list[dict]:
    """Prune every layer of ``model`` in place by ``whole_network_config`` (PatDNN's 8 patterns,
    ``connectivity`` for the 3x3 convs, blocks of 8 rows at ``sparsity`` for the 1x1 convs and linear
    layers; ``filter_block``: 3x3 filters in blocks sharing structure), one-shot, masks baked in;
    returns the config. ``dense`` receives the layers kept dense."""
    config = whole_network_config(model, connectivity=connectivity, sparsity=sparsity, dense=dense,
                                  filter_block=filter_block)
    oneshot_prune(model, config, PatternLibrary.patdnn()).squash()
    return config


def pruned_network(name: str, image_size: int = 224, connectivity: float = 3.6, sparsity: float = 0.75,
                   filter_block: int = 0):
    """(model, input, Relax module) of a reference network compressed as ``tvm-patterns demo``
    compresses it (same seed, ``compress_network``): what ``tune`` and ``build`` work on, so the
    tuning records of one are found by the other."""
    model = get_network(name, image_size)
    compress_network(model, connectivity, sparsity, filter_block=filter_block)
    x = torch.randn(1, 3, image_size, image_size)
    return model, x, from_pytorch(model, x)
