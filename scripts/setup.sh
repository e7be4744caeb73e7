#!/usr/bin/env bash
# Create .venv and install the project with its dev extras, once (again when pyproject.toml changes).
# torch goes in first, pinned: an unpinned torch pulled in by another package is a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ -f "$stamp" ]; then
  exit 0
fi
[ -d .venv ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==${CROSSRERANK_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q -e ".[dev]"
rm -f .venv/.installed-*
touch "$stamp"
