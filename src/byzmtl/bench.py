"""Benchmarks of the engine on target localization (``byzmtl bench``).

- ``paper``: the paper experiment (100 agents, 500 iterations, 20 attackers, the four rules):
  compute seconds (the engine's loop, best of a few runs) and whole-process seconds of
  ``byzmtl run`` (Python start, imports, run, figures, results folder).
- ``scaling``: seconds per round with the loss rule for growing networks (geometric graph at the
  paper's density, the area growing with the number of agents, at most 10 neighbours), graph
  construction time and peak memory; each size runs in a fresh process so peaks do not mix.
  With two sizes or more, the peaks are fitted as ``peak = a * agents + b * edges + c``
  (:func:`fit_memory`: bytes per agent, per edge, and of the imported process). Agents and
  edges grow together on these graphs (about ten edges per agent), which alone would leave a
  and b undetermined, so one more point runs at the largest size with at most 5 neighbours.
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


NEIGHBOURS = 10  # the paper's cap on |N_k| (self included)
FIT_NEIGHBOURS = 5  # the cap of the extra point that separates bytes per agent and per edge


def scaling_point(agents: int, rounds: int, neighbours: int = NEIGHBOURS) -> dict[str, Any]:
    """Build the network of ``agents`` agents (at most ``neighbours`` neighbours, self
    included) and time ``rounds`` rounds of the loss rule. ``baseline_memory_gb``: the peak
    resident memory before the network is built (the imported process)."""
    import torch

    from byzmtl.experiment import prepare

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    graph = {"kind": "geometric", "radius": 1.0, "max_neighbours": neighbours}
    started = time.perf_counter()
    experiment = prepare(
        {
            "case": "target-localization",
            "rules": ["loss"],
            "task": {"agents": agents},
            "graph": graph,
        }
    )
    build = time.perf_counter() - started
    simulation = experiment.simulation
    state = simulation.step(simulation.init_state())[0]  # warm-up round
    started = time.perf_counter()
    with torch.inference_mode():
        for _ in range(rounds):
            state = simulation.step(state)[0]  # the round's weights are dropped at once
    per_round = (time.perf_counter() - started) / rounds  # data generation included
    return {
        "agents": agents,
        "edges": experiment.graph.n_edges,
        "neighbours": neighbours,
        "baseline_memory_gb": baseline,
        "build_seconds": build,
        "seconds_per_round": per_round,
        "rounds_timed": rounds,
        "peak_memory_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }


def scaling(sizes: Sequence[int], rounds: int) -> list[dict[str, Any]]:
    """One fresh process per size (so that peak memory is that size's own); with two sizes or
    more, one more point at the largest size with at most ``FIT_NEIGHBOURS`` neighbours (for
    :func:`fit_memory`)."""
    runs = [(agents, NEIGHBOURS) for agents in sizes]
    if len(set(sizes)) >= 2:
        runs.append((max(sizes), FIT_NEIGHBOURS))
    points = []
    for agents, neighbours in runs:
        timed = max(3, min(rounds, int(2e7 // agents)))
        command = ["--point", str(agents), str(timed), str(neighbours)]
        output = subprocess.run(
            [sys.executable, "-m", "byzmtl.bench", *command],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        points.append(json.loads(output))
    return points


def fit_memory(points: Sequence[dict[str, Any]]) -> dict[str, float] | None:
    """Least squares of ``peak = a * agents + b * edges + c`` over the points (their
    ``peak_memory_gb``, GB = 1e9 bytes): ``bytes_per_agent`` a, ``bytes_per_edge`` b,
    ``base_gb`` c, and ``worst_error_gb``, the largest distance of a point from the fit.
    None unless the points determine all three: at least three points, and (agents, edges, 1)
    of full rank, with agents and edges not (nearly) proportional (relative condition number
    under 1e6)."""
    import numpy as np

    if len(points) < 3:
        return None
    design = np.array([[p["agents"], p["edges"], 1.0] for p in points], dtype=np.float64)
    peaks = np.array([p["peak_memory_gb"] * 1e9 for p in points], dtype=np.float64)
    scale = np.abs(design).max(0)
    scaled = design / scale
    if np.linalg.matrix_rank(scaled) < 3 or np.linalg.cond(scaled) > 1e6:
        return None
    solution = np.linalg.lstsq(scaled, peaks, rcond=None)[0] / scale
    residuals = design @ solution - peaks
    a, b, c = (float(x) for x in solution)
    return {
        "bytes_per_agent": a,
        "bytes_per_edge": b,
        "base_gb": c / 1e9,
        "worst_error_gb": float(np.abs(residuals).max()) / 1e9,
    }


def predicted_peak_gb(fit: dict[str, float], agents: int, edges: int) -> float:
    """The peak memory of ``fit`` (see :func:`fit_memory`) at ``agents`` and ``edges``, GB."""
    return (fit["bytes_per_agent"] * agents + fit["bytes_per_edge"] * edges) / 1e9 + fit["base_gb"]


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
        out["memory_fit"] = fit_memory(out["scaling"])
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
            f"{'agents':>9} {'edges':>10} {'nbrs':>5} {'build s':>8} {'s/round':>8} "
            f"{'x prev':>7} {'peak GB':>8} {'B/agent':>8}",
        ]
        previous = None
        for p in results["scaling"]:
            ratio = "" if previous is None else f"{p['seconds_per_round'] / previous:.1f}"
            lines.append(
                f"{p['agents']:>9} {p['edges']:>10} {p.get('neighbours', NEIGHBOURS):>5} "
                f"{p['build_seconds']:>8.2f} {p['seconds_per_round']:>8.4f} {ratio:>7} "
                f"{p['peak_memory_gb']:>8.2f} {p['peak_memory_gb'] * 1e9 / p['agents']:>8.0f}"
            )
            previous = p["seconds_per_round"]
        fit = results.get("memory_fit")
        if fit:
            lines.append(
                f"peak memory = {fit['bytes_per_agent']:.0f} B/agent x agents + "
                f"{fit['bytes_per_edge']:.1f} B/edge x edges + {fit['base_gb']:.2f} GB "
                f"(worst point {fit['worst_error_gb'] * 1e3:.0f} MB off)"
            )
    if results.get("full"):
        f = results["full"]
        lines += [
            "",
            f"full run: {f['agents']} agents x {f['rounds']} rounds, loss rule: "
            f"{f['process_seconds']:.0f} s whole process ({f['compute_seconds']:.0f} s "
            "compute)",
        ]
    return "\n".join(lines)


if __name__ == "__main__":  # a scaling point in its own process: --point AGENTS ROUNDS [NBRS]
    if sys.argv[1:2] == ["--point"]:
        from byzmtl.allocator import limit_heap_retention

        limit_heap_retention()  # as the command line does
        numbers = [int(a) for a in sys.argv[2:5]]
        print(json.dumps(scaling_point(*numbers)))
