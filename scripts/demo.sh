#!/usr/bin/env bash
# Set up, then run the paper's target localization with 20 Byzantine agents under all four rules.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/byzmtl run target-localization --attackers 20 --rules loss,distance,average,none \
  --seed 0 --out runs/demo --overwrite "$@"
