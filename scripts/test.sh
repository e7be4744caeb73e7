#!/usr/bin/env bash
# Set up (if needed), then lint, type-check and run the tests (see below for the `slow` ones).
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
# No arguments: the default run, without the tests marked `slow` (real models and data sets, Ray, training).
# `--slow`: only those. Anything else is passed to pytest as it is (e.g. a test file, then every test in it runs).
if [ "$#" -eq 0 ]; then
  python -m pytest -m "not slow"
elif [ "$1" = "--slow" ]; then
  shift
  python -m pytest -m slow "$@"
else
  python -m pytest "$@"
fi
