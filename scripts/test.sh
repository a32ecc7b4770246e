#!/usr/bin/env bash
# Set up, then lint, type-check and run the whole test suite. Tests that need the full datasets
# run when BYZMTL_DATA names a folder holding them (mnist/, har/"UCI HAR Dataset"/), else they
# are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks examples
.venv/bin/ruff format --check src tests benchmarks examples
.venv/bin/mypy src
.venv/bin/pytest "$@"  # options: pyproject.toml
