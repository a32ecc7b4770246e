"""One thread against two, across problem sizes, with and without a busy competing process:
the measurement behind the default thread policy (``byzmtl.threads``).

    python benchmarks/thread_threshold.py [--out benchmarks/results/thread_threshold.json]

For each condition (threads 1 or 2; alone, or beside one process that spins on a core) a fresh
process runs target localization with the loss, distance, average and none rules at growing
numbers of agents (2 parameters each: agents x parameters from 200 to 2e5), and, where
``BYZMTL_DATA`` names the full datasets, HAR (30 agents x 3,372 parameters, 1 epoch); per size
it records the best of two runs' compute seconds per round. The ratio two threads / one thread
above 1 means the second thread costs time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

AGENTS = [100, 2_000, 20_000, 100_000]
RULES = ["loss", "distance", "average", "none"]


def point(config: dict[str, Any]) -> dict[str, Any]:
    """Best-of-two compute seconds per round of ``config`` in this process."""
    from byzmtl.experiment import prepare, run
    from byzmtl.threads import problem_size

    seconds = []
    experiment = prepare(config)
    for _ in range(2):
        summary = run(experiment).summary
        seconds.append(summary["compute_seconds"] / summary["diagnostics"]["rounds"])
    return {"problem_size": problem_size(experiment.simulation), "seconds_per_round": min(seconds)}


def condition(threads: int) -> list[dict[str, Any]]:
    """Every size at ``threads`` threads (run in a fresh process by :func:`measure`)."""
    import torch

    torch.set_num_threads(threads)
    points = []
    for agents in AGENTS:
        iterations = int(max(5, min(100, 2e5 // agents)))
        config = {
            "case": "target-localization",
            "attackers": agents // 5,
            "rules": RULES,
            "task": {"agents": agents, "iterations": iterations},
        }
        points.append({"case": "target-localization", "agents": agents, **point(config)})
        print(f"threads {threads}: {agents} agents done", file=sys.stderr, flush=True)
    data = os.environ.get("BYZMTL_DATA")
    if data:
        har = Path(data) / "har" / "UCI HAR Dataset"
        config = {"case": "har", "attackers": 10, "task": {"data_dir": str(har), "epochs": 1}}
        points.append({"case": "har", "agents": 30, **point(config)})
    return points


def measure() -> dict[str, Any]:
    out: dict[str, Any] = {"load_average_before": os.getloadavg(), "cpus": os.cpu_count()}
    runs = []
    for competing in (False, True):
        spinner = (
            subprocess.Popen([sys.executable, "-c", "while True: pass"]) if competing else None
        )
        try:
            for threads in (1, 2):
                env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
                text = subprocess.run(
                    [sys.executable, __file__, "--condition", str(threads)],
                    check=True,
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env,
                ).stdout
                runs.append(
                    {"threads": threads, "competing": competing, "points": json.loads(text)}
                )
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()
    out["runs"] = runs
    out["load_average_after"] = os.getloadavg()
    return out


def table(result: dict[str, Any]) -> str:
    by = {(r["threads"], r["competing"]): r["points"] for r in result["runs"]}
    lines = [
        f"load average {result['load_average_before'][0]:.2f} before, "
        f"{result['load_average_after'][0]:.2f} after, {result['cpus']} CPUs",
        f"{'case':<20} {'agents x params':>15} {'1 thr ms':>9} {'2 thr ms':>9} {'2/1':>5}"
        f" {'1 busy':>8} {'2 busy':>8} {'2/1':>5}",
    ]
    for i, p in enumerate(by[(1, False)]):
        one, two = p["seconds_per_round"], by[(2, False)][i]["seconds_per_round"]
        one_b, two_b = by[(1, True)][i]["seconds_per_round"], by[(2, True)][i]["seconds_per_round"]
        lines.append(
            f"{p['case']:<20} {p['problem_size']:>15,} {one * 1e3:>9.3f} {two * 1e3:>9.3f}"
            f" {two / one:>5.2f} {one_b * 1e3:>8.3f} {two_b * 1e3:>8.3f} {two_b / one_b:>5.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the raw results as JSON here")
    parser.add_argument("--condition", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.condition is not None:
        print(json.dumps(condition(args.condition)))
        return
    result = measure()
    print(table(result))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
