#!/usr/bin/env bash
# Reproduces the sweep figures shown in README.md (docs/sweep/*.png) on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/tvm-patterns sweep --nets vgg16,resnet18 --patterns 8 --connectivity 1,2,3.6,5 \
    --image-size 112 --rounds 5 --out docs/sweep "$@"
