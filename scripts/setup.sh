#!/usr/bin/env bash
# Create .venv (if needed) and install byzmtl with its test tools. torch is pinned to 2.13.0,
# the CPU build; pip takes it from the local wheel cache where one exists.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
