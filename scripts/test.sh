#!/usr/bin/env bash
# Set up (if needed), then lint, type-check and run every test, the `slow` ones included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HAYSTACK_TELEMETRY_ENABLED=False
. .venv/bin/activate
ruff check .
ruff format --check .
mypy
python -m pytest "$@"
