"""Whole-process time of the paper experiment against ``python -c "import torch"``.

    python benchmarks/startup.py [--repeats 7] [--out benchmarks/results/startup.json]

In one run, alternately, ``--repeats`` times each:

- ``python -c "import torch"``: the floor any run of byzmtl pays;
- the README's demo command (``scripts/demo.sh`` without its setup: ``byzmtl run
  target-localization --attackers 20 --rules loss,distance,average,none --seed 0 --out DIR
  --overwrite``), figures included, with its output folder in a temporary directory;
- ``byzmtl --help``, ``byzmtl --version``, ``byzmtl list``.

Reports the best and the median of each and the ratios demo / import torch (best over best,
median over median), with the load average before and after (timings on a shared machine are
only comparable at the same load).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BYZMTL = [sys.executable, "-m", "byzmtl"]
DEMO = ["run", "target-localization", "--attackers", "20", "--rules", "loss,distance,average,none"]


def timed(command: list[str]) -> float:
    """Wall seconds of one process (its output discarded; a failure stops the benchmark)."""
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - started


def summary(values: list[float]) -> dict[str, Any]:
    return {"best": min(values), "median": statistics.median(values), "all": values}


def measure(repeats: int) -> dict[str, Any]:
    commands = {
        "import_torch": [sys.executable, "-c", "import torch"],
        "help": [*BYZMTL, "--help"],
        "version": [*BYZMTL, "--version"],
        "list": [*BYZMTL, "list"],
    }
    times: dict[str, list[float]] = {name: [] for name in [*commands, "demo"]}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        demo = [*BYZMTL, *DEMO, "--seed", "0", "--out", str(Path(folder) / "demo"), "--overwrite"]
        for command in [*commands.values(), demo]:
            timed(command)  # warm the file cache once, untimed
        for _ in range(repeats):
            times["import_torch"].append(timed(commands["import_torch"]))
            times["demo"].append(timed(demo))
        for name in ("help", "version", "list"):
            times[name] = [timed(commands[name]) for _ in range(repeats)]
        files = sorted(p.name for p in (Path(folder) / "demo").iterdir())
    out: dict[str, Any] = {name: summary(values) for name, values in times.items()}
    out["ratio_best"] = out["demo"]["best"] / out["import_torch"]["best"]
    out["ratio_median"] = out["demo"]["median"] / out["import_torch"]["median"]
    out["demo_files"] = files
    out["load_average_before"] = load_before
    out["load_average_after"] = os.getloadavg()
    out["cpus"] = os.cpu_count()
    out["command"] = " ".join(["byzmtl", *DEMO, "--seed", "0", "--out", "DIR", "--overwrite"])
    return out


def table(result: dict[str, Any]) -> str:
    lines = [
        f"load average {result['load_average_before'][0]:.2f} before, "
        f"{result['load_average_after'][0]:.2f} after, {result['cpus']} CPUs",
        f"{'process':<14} {'best s':>7} {'median s':>9}",
    ]
    for name in ("import_torch", "demo", "help", "version", "list"):
        lines.append(f"{name:<14} {result[name]['best']:>7.3f} {result[name]['median']:>9.3f}")
    lines.append(
        f"demo / import torch: {result['ratio_best']:.2f}x best, "
        f"{result['ratio_median']:.2f}x median"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, help="write the raw results as JSON here")
    args = parser.parse_args()
    result = measure(args.repeats)
    print(table(result))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
