#!/usr/bin/env bash
# Lint, type-check and run every test (the `slow` ones too). Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check .
ruff format --check .
mypy
python -m pytest
