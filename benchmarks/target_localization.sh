#!/usr/bin/env bash
# The engine benchmarks of benchmarks/RESULTS.md (target localization). Run on a quiet machine:
# timings depend on what else runs; the report prints the load average.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/byzmtl bench --only paper,scaling --agents 1e3,1e4,1e5,1e6 --rounds 40 --json \
  > benchmarks/target_localization.json
.venv/bin/byzmtl bench --only full --agents 1e6 --json > benchmarks/target_localization_full.json
.venv/bin/python - <<'PY'
import json
from byzmtl.bench import table
for name in ("target_localization", "target_localization_full"):
    print(table(json.load(open(f"benchmarks/{name}.json"))))
PY
