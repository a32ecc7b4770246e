"""Benchmarks of the engine on target localization (``byzmtl bench``).

- ``paper``: the paper experiment (100 agents, 500 iterations, 20 attackers, the four rules):
  compute seconds (the engine's loop, best of a few runs) and whole-process seconds of
  ``byzmtl run`` (Python start, imports, run, figures, results folder).
- ``scaling``: seconds per round with the loss rule for growing networks (geometric graph at the
  paper's density, the area growing with the number of agents, at most 10 neighbours), graph
  construction time and peak memory; each size runs in a fresh process so peaks do not mix.
- ``full``: the whole ``byzmtl run`` at the largest size for all its rounds.

The engine against the tests' plain per-agent loop: ``python benchmarks/engine_oracle.py``.

Timings depend on what else the machine is doing; the report records the load average.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PAPER = {"case": "target-localization", "attackers": 20, "seed": 0}


def timed_process(*arguments: str) -> tuple[float, dict[str, Any]]:
    """Wall seconds of a whole ``byzmtl run target-localization ARGUMENTS`` process (Python
    start, imports, run, figures, results folder), and its summary.json."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        command = [sys.executable, "-m", "byzmtl", "run", "target-localization", *arguments]
        started = time.perf_counter()
        subprocess.run([*command, "--out", str(out), "--no-progress", "--quiet"], check=True)
        wall = time.perf_counter() - started
        return wall, json.loads((out / "summary.json").read_text())


def paper(repeats: int = 5) -> dict[str, Any]:
    """Compute seconds of the paper experiment (best of ``repeats``) and one whole process."""
    from byzmtl.experiment import run

    compute = [run(PAPER).summary["compute_seconds"] for _ in range(repeats)]
    process, _ = timed_process("--attackers", "20")
    return {
        "compute_seconds": min(compute),
        "compute_seconds_all": compute,
        "process_seconds": process,
    }


def scaling_point(agents: int, rounds: int) -> dict[str, Any]:
    """Build the network of ``agents`` agents and time ``rounds`` rounds of the loss rule."""
    import torch

    from byzmtl.experiment import prepare

    started = time.perf_counter()
    experiment = prepare(
        {"case": "target-localization", "rules": ["loss"], "task": {"agents": agents}}
    )
    build = time.perf_counter() - started
    simulation = experiment.simulation
    state, _ = simulation.step(simulation.init_state())  # warm-up round
    started = time.perf_counter()
    with torch.inference_mode():
        for _ in range(rounds):
            state, _ = simulation.step(state)
    per_round = (time.perf_counter() - started) / rounds  # data generation included
    return {
        "agents": agents,
        "edges": experiment.graph.n_edges,
        "build_seconds": build,
        "seconds_per_round": per_round,
        "rounds_timed": rounds,
        "peak_memory_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }


def scaling(sizes: Sequence[int], rounds: int) -> list[dict[str, Any]]:
    """One fresh process per size (so that peak memory is that size's own)."""
    points = []
    for agents in sizes:
        timed = max(3, min(rounds, int(2e7 // agents)))
        output = subprocess.run(
            [sys.executable, "-m", "byzmtl.bench", "--point", str(agents), str(timed)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        points.append(json.loads(output))
    return points


def full(agents: int) -> dict[str, Any]:
    """The whole ``byzmtl run`` with the loss rule at ``agents`` agents, every round."""
    wall, summary = timed_process("--rules", "loss", "--agents", str(agents))
    return {
        "agents": agents,
        "rounds": summary["records"],
        "process_seconds": wall,
        "compute_seconds": summary["compute_seconds"],
        "final_loss": summary["rules"]["loss"]["final"]["loss"]["mean"],
    }


def report(only: Sequence[str], sizes: Sequence[int], rounds: int) -> dict[str, Any]:
    out: dict[str, Any] = {"load_average": os.getloadavg(), "cpus": os.cpu_count()}
    if "paper" in only:
        out["paper"] = paper()
    if "scaling" in only:
        out["scaling"] = scaling(sizes, rounds)
    if "full" in only:
        out["full"] = full(max(sizes))
    return out


def table(results: dict[str, Any]) -> str:
    """The report as plain-text tables."""
    lines = [f"load average {results['load_average'][0]:.2f} on {results['cpus']} CPUs"]
    if "paper" in results:
        p = results["paper"]
        lines += [
            "",
            "paper experiment (100 agents, 500 iterations, 4 rules, 20 attackers)",
            f"  compute {p['compute_seconds']:.3f} s   whole process {p['process_seconds']:.2f} s",
        ]
    if "scaling" in results:
        lines += [
            "",
            f"{'agents':>9} {'edges':>10} {'build s':>8} {'s/round':>8} "
            f"{'x prev':>7} {'peak GB':>8}",
        ]
        previous = None
        for p in results["scaling"]:
            ratio = "" if previous is None else f"{p['seconds_per_round'] / previous:.1f}"
            lines.append(
                f"{p['agents']:>9} {p['edges']:>10} {p['build_seconds']:>8.2f} "
                f"{p['seconds_per_round']:>8.4f} {ratio:>7} {p['peak_memory_gb']:>8.2f}"
            )
            previous = p["seconds_per_round"]
    if results.get("full"):
        f = results["full"]
        lines += [
            "",
            f"full run: {f['agents']} agents x {f['rounds']} rounds, loss rule: "
            f"{f['process_seconds']:.0f} s whole process ({f['compute_seconds']:.0f} s "
            "compute)",
        ]
    return "\n".join(lines)


if __name__ == "__main__":  # a scaling point in its own process: --point AGENTS ROUNDS
    if sys.argv[1:2] == ["--point"]:
        print(json.dumps(scaling_point(int(sys.argv[2]), int(sys.argv[3]))))
