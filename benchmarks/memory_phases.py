"""Where the peak memory of a target-localization run comes from, phase by phase.

    .venv/bin/python -m benchmarks.memory_phases --agents 1e6 --rounds 20 \
        --out benchmarks/results/memory_phases_1e6.json

One process; before each phase the kernel's peak resident set (``VmHWM``) is reset (writing 5
to ``/proc/self/clear_refs``), so each phase reports its own peak and the resident memory it
leaves behind (``VmRSS``), both in GB (1e9 bytes). tracemalloc would not see torch's memory.
Another version of the library is measured with ``PYTHONPATH=/path/to/its/src``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _status() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in GB."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = float(rest.split()[0]) * 1024 / 1e9
    return values["VmRSS"], values["VmHWM"]


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def measure(agents: int, rounds: int) -> list[dict[str, Any]]:
    phases: list[dict[str, Any]] = []

    def phase(name: str, work: Callable[[], Any]) -> Any:
        before, _ = _status()
        _reset_peak()
        started = time.perf_counter()
        value = work()
        seconds = time.perf_counter() - started
        rss, peak = _status()
        phases.append(
            {
                "phase": name,
                "seconds": seconds,
                "rss_before_gb": before,
                "peak_gb": peak,
                "rss_after_gb": rss,
            }
        )
        return value

    import numpy as np
    import torch

    try:  # as the command line does (versions before byzmtl.allocator: nothing to set)
        from byzmtl.allocator import limit_heap_retention

        limit_heap_retention()
    except ImportError:
        pass
    from byzmtl.config import parse
    from byzmtl.engine.simulation import Simulation
    from byzmtl.experiment import build_graph
    from byzmtl.recording import Recorder
    from byzmtl.rules import RULES
    from byzmtl.tasks import CASES

    phases.append({"phase": "imports", "rss_after_gb": _status()[0], "peak_gb": _status()[1]})
    config = parse(
        {"case": "target-localization", "rules": ["loss"], "task": {"agents": agents}}
    ).resolved()
    case_class = CASES.get(config.case)
    settings = case_class.settings_model.model_validate(config.task)
    case = phase("case study (per-agent data)", lambda: case_class.from_settings(settings, 0))
    assert config.graph is not None
    graph = phase("graph construction", lambda: build_graph(config.graph, case, 0))
    rule = RULES.create("loss", dict(config.rule_params.get("loss", {})))
    simulation = phase(
        "engine (edge tensors, shards)",
        lambda: Simulation(case, graph, [rule], None, [], 0, case.keys),
    )
    state = phase("initial state", simulation.init_state)
    state, out = phase("first round", lambda: simulation.step(state))

    def more() -> Any:
        nonlocal state, out
        for _ in range(rounds - 1):
            state, out = simulation.step(state)

    phase(f"rounds 2..{rounds}", more)
    normal = np.ones(agents, dtype=bool)
    recorder = Recorder(case.metric_names, ["loss"], normal, case.groups, case.group_names)

    def record() -> None:
        for _ in range(rounds):
            recorder.add({k: v.clone() for k, v in out.metrics.items()})
        recorder.table("iteration", np.arange(rounds))

    phase(f"recording {rounds} rounds", record)
    del torch
    return [{"agents": agents, "edges": graph.n_edges, **p} for p in phases]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=float, required=True)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    phases = measure(int(args.agents), args.rounds)
    for p in phases:
        print(
            f"{p['phase']:<34} {p.get('seconds', 0):7.2f} s  peak {p['peak_gb']:6.3f} GB  "
            f"after {p['rss_after_gb']:6.3f} GB"
        )
    if args.out:
        args.out.write_text(json.dumps(phases, indent=1) + "\n")


if __name__ == "__main__":
    main()
