"""Engine timings of one checkout, for side-by-side comparisons of two versions (before/after).

    git worktree add --detach ../before <commit>
    for i in 1 2 3; do for tree in ../before .; do
      (cd $tree && PYTHONPATH=src BYZMTL_DATA=../shared/data \\
        python benchmarks/engine_ab.py --label $tree >> /tmp/ab.jsonl)
    done; done

Prints one JSON line: for each setting, the best of three (CPU seconds of the one torch thread,
wall seconds) of its rounds (``simulation.step``, after one warm-up round), or of a whole
``byzmtl.run`` for the paper run (recording included). CPU seconds of one thread are the measure
least disturbed by other processes on a shared machine; alternating the two versions several
times and taking the best of each evens out the rest. Uses only ``prepare``/``run``/``step``, so
it runs unchanged on older versions.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import torch

from byzmtl.experiment import prepare, run

DATA = os.environ.get("BYZMTL_DATA", "../shared/data")
PAPER = {"case": "target-localization", "attackers": 20, "seed": 0}


def settings() -> dict[str, tuple[str, dict[str, Any], int]]:
    har = f"{DATA}/har/UCI HAR Dataset"

    def tl(agents: int) -> dict[str, Any]:
        return {"case": "target-localization", "rules": ["loss"], "task": {"agents": agents}}

    return {
        "tl paper run (4 rules, 20 attackers, 500 it, recording)": ("run", PAPER, 0),
        "tl paper rounds (4 rules, 20 attackers) x500": ("steps", PAPER, 500),
        "tl 1e4 agents loss x40": ("steps", tl(10**4), 40),
        "tl 1e5 agents loss x20": ("steps", tl(10**5), 20),
        "tl 1e6 agents loss x5": ("steps", tl(10**6), 5),
        "har 4 rules x66 (3 epochs of rounds)": (
            "steps",
            {"case": "har", "rules": ["loss", "distance", "average", "none"], "attackers": 0,
             "task": {"data_dir": har}},
            66,
        ),
        "har loss, 10 attackers x66": (
            "steps",
            {"case": "har", "rules": ["loss"], "attackers": 10, "task": {"data_dir": har}},
            66,
        ),
        "digits loss+average x8": (
            "steps",
            {"case": "digits", "rules": ["loss", "average"], "attackers": 0,
             "task": {"data_dir": f"{DATA}/mnist"}},
            8,
        ),
    }  # fmt: skip


def timed(kind: str, config: dict[str, Any], rounds: int) -> tuple[float, float]:
    if kind == "run":
        cpu, wall = time.thread_time(), time.perf_counter()
        run(config)
        return time.thread_time() - cpu, time.perf_counter() - wall
    simulation = prepare(config).simulation
    state, _ = simulation.step(simulation.init_state())
    with torch.inference_mode():
        cpu, wall = time.thread_time(), time.perf_counter()
        for _ in range(rounds):
            state, _ = simulation.step(state)
        return time.thread_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default=".", help="the version's name in the output")
    parser.add_argument("--only", nargs="*", help="setting names (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    chosen = settings()
    out: dict[str, list[float]] = {}
    for name in args.only or list(chosen):
        repeats = [timed(*chosen[name]) for _ in range(3)]
        out[name] = [min(cpu for cpu, _ in repeats), min(wall for _, wall in repeats)]
    print(json.dumps({"version": args.label, "load": os.getloadavg(), "t": out}))


if __name__ == "__main__":
    main()
