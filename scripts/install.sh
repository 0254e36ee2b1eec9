#!/usr/bin/env bash
# Installs everything on a fresh machine: Debian packages (.ci/apt-packages.txt), a venv in .venv,
# and the project with its pinned dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=$(grep -v '^\s*#' .ci/apt-packages.txt | tr -s ' \n' ' ' || true)
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q -e .
.venv/bin/python -c "import tvm, torch, tvm_patterns; print('installed: tvm', tvm.__version__, 'torch', torch.__version__)"
