#!/usr/bin/env bash
# Set up (if needed), then lint, type-check and run every test, the `slow` ones included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HAYSTACK_TELEMETRY_ENABLED=False
# NNCF compiles its PyTorch extension on first use in a fresh environment; its 60 s limit is too short on a busy 2-core machine.
export NNCF_EXTENSION_LOAD_TIMEOUT="${NNCF_EXTENSION_LOAD_TIMEOUT:-600}"
. .venv/bin/activate
ruff check .
ruff format --check .
mypy
python -m pytest "$@"
