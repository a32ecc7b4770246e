"""The engine against the plain per-agent, per-neighbour loops of the tests' oracle
(``tests/test_engine.py``) on the paper network: 100 agents, 20 attackers, the four rules.

    python benchmarks/engine_oracle.py [--rounds 100]

Prints the seconds of both and their ratio as JSON (with the load average before).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from byzmtl import graph as graphs
from byzmtl.tasks.target_localization import (
    TargetLocalization,
    TargetLocalizationSettings,
)
from tests.test_engine import oracle_for, simulate


def compare(rounds: int) -> dict[str, float | int]:
    """Seconds of the engine (all four rules in one run) and of the oracle (rule by rule)."""
    task = TargetLocalization.from_settings(TargetLocalizationSettings(), 0)
    paper_graph = graphs.geometric(task.positions, 1.0, 10, 0, task.keys)
    pairs = zip(paper_graph.receivers.tolist(), paper_graph.senders.tolist(), strict=True)
    net = {
        "n": 100,
        "edges": [(k, l) for k, l in pairs if k != l],
        "byzantine": list(range(0, 100, 5)),
        "seed": 0,
        "nu": 0.1,
        "r0": 10.0,
        "attack": "constant",
    }
    started = time.perf_counter()
    sim, task, graph, _, _, _ = simulate(net, iterations=rounds)
    engine = time.perf_counter() - started
    started = time.perf_counter()
    for rule in ("loss", "distance", "average", "none"):
        oracle_for(net, sim, task, graph, rule)
    plain = time.perf_counter() - started
    return {"agents": 100, "rounds": rounds, "engine_seconds": engine,
            "oracle_seconds": plain, "speedup": plain / engine}  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    load = os.getloadavg()
    print(json.dumps({"load_average": load, **compare(parser.parse_args().rounds)}))
