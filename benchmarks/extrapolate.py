"""1e8 agents on 16 machines, extrapolated from measured costs (target localization, geometric
graph at the paper's density, at most 10 neighbours, loss rule, 10 % attackers, float64).

    python benchmarks/extrapolate.py [--agents 1e8] [--machines 16] [--gbits 10] \
        [--out benchmarks/results/extrapolation_1e8.json]

Measured inputs (read from benchmarks/results/):

- stage 1: the memory fit of one process, ``memory_scaling.json`` (bytes = base + a agents + e
  edges); seconds per round of one process, one thread, at 1e6 agents
  (``distributed_table.json``) and at 1e7 (``memory_scaling_1e7.json``, on a loaded machine);
  the bytes a rank sent per round per agent it owns at P = 2 (``distributed_table.json``).
- stage 2: a rank's engine at P = 2, 1e7 agents (``rank_memory_1e7_parts.json``, the rank that
  holds the most): the bytes it holds per own edge, per own or halo agent and per agent of the
  network, and the resident memory of the imports; from whole runs as ``byzmtl run`` makes them
  (recording included, ``distributed_record_1e7.json``, P = 2): the rounds' peak above what the
  engine holds (counted per own edge), the bytes received per round for the other ranks' pieces
  of the statistics, per agent not owned, and each rank's seconds per round per own edge, at
  1e6 and 1e7 agents (a range).

Stage 1 (every machine holds the whole network and computes the replicated steps for every
agent; each round it receives the other machines' shard results) is kept for comparison.

Stage 2, as built: a machine holds its n = N / M agents (contiguous ranges of receivers along
the agents' space-filling curve) and the edges into them, e = E / M. Its halo, the senders
outside its range, is taken as a square block's: its perimeter times the radius times the
density, h = 4 sqrt(k N / (pi M)) agents (the measured ranges of P = 2 are not square blocks;
their measured halo is reported beside the model's); per round it receives the halo's psi and
w(i-1) (the attack reads both), 2 d 8 bytes per halo agent per rule, and every other agent's
metrics (the gather the recording reads), the measured bytes per agent not owned. Memory per
machine = imports + the bytes held per own edge, per own or halo agent and per agent of the
network, at the measured rates, + the rounds' peak above that, at the measured bytes per own
edge. A machine's state stays its own at the end and in checkpoints; at a checkpoint machine 0
holds one other machine's part at a time, pickled and unpickled, 2 x 8 R (e + d n) bytes.
Compute per round = the machine's edges at the measured seconds per own edge. Latency, and
compute that does not scale with the edges, are left out.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
PARAMETERS = 2  # target localization: psi in R^2
RULES = 1  # the loss rule
NEIGHBOURS = 10
EXCHANGED = 2  # psi and w(i-1) per halo agent: the attack reads both


def _scaling(name: str, agents: int) -> dict[str, Any]:
    rows = json.loads((RESULTS / name).read_text())["scaling"]
    return next(r for r in rows if r["agents"] == agents and r["neighbours"] == NEIGHBOURS)


def _runs(name: str) -> list[dict[str, Any]]:
    return json.loads((RESULTS / name).read_text())["result"]["runs"]


def _per_own_edge(run: dict[str, Any]) -> float:
    """The slowest rank's median seconds per round, per edge a rank holds (the median rank's
    edges: the edges are cut evenly)."""
    return run["seconds_per_round"] / (run["agents"] * NEIGHBOURS / run["procs"])


def measured() -> dict[str, Any]:
    """The measured costs the extrapolation uses (see the module docstring)."""
    fit = json.loads((RESULTS / "memory_scaling.json").read_text())["memory_fit"]
    large = _scaling("memory_scaling_1e7.json", 10**7)
    stage1 = {
        (r["agents"], r["procs"]): r for r in _runs("distributed_table.json") if r["case"] == "tl"
    }
    parts = {(r["agents"], r["procs"]): r for r in _runs("distributed_record_1e7.json")}
    one, two = stage1[10**6, 1], stage1[10**6, 2]
    ranks = _runs("rank_memory_1e7_parts.json")[0]["ranks"]
    rank = max(ranks, key=lambda r: sum(r["held"]["mb"].values()))  # the rank holding the most
    held, counts = rank["held"], rank["counts"]
    steps = {step["step"]: step for step in rank["steps"]}
    imports = steps["imports"]["resident_mb"] * 2**20
    held_bytes = sum(held["mb"].values()) * 2**20
    big = parts[10**7, 2]
    rounds_peak = max(big["rounds_peak_rss_gb_per_rank"]) * 1e9  # the recording included
    not_owned = big["agents"] - big["agents"] / 2
    return {
        "bytes_per_agent": fit["bytes_per_agent"],
        "bytes_per_edge": fit["bytes_per_edge"],
        "base_bytes": fit["base_gb"] * 1e9,
        "seconds_per_edge_1e6": one["seconds_per_round"] / (one["agents"] * NEIGHBOURS),
        "seconds_per_edge_1e7": large["seconds_per_round"] / large["edges"],
        "stage1_bytes_per_owned_agent": max(max(r["sent_bytes"]) for r in two["ranks"])
        / (two["agents"] / 2),
        "rank_imports_bytes": imports,
        "rank_bytes_per_own_edge": (held["mb"]["own edges"] + held["mb"]["other"])
        * 2**20
        / counts["own edges"],
        "rank_bytes_per_own_agent": held["bytes_per"]["own agents and halo"],
        "rank_bytes_per_network_agent": held["bytes_per"]["all agents"],
        "rank_round_peak_bytes_per_own_edge": (rounds_peak - imports - held_bytes)
        / counts["own edges"],
        "rank_seconds_per_own_edge": [_per_own_edge(parts[10**6, 2]), _per_own_edge(big)],
        "metrics_bytes_per_agent_not_owned": max(big["received_bytes_per_round_per_rank"])
        / not_owned,
        "halo_bytes_measured_1e7_p2": max(big["halo_received_bytes_per_round_per_rank"]),
    }


def halo_agents(agents: float, machines: int) -> float:
    """A square block's halo: 4 sqrt(k N / (pi M)) agents (see the module docstring)."""
    return 4 * math.sqrt(NEIGHBOURS * agents / (math.pi * machines))


def extrapolate(agents: float, machines: int, gbits: float) -> dict[str, Any]:
    costs = measured()
    edges = agents * NEIGHBOURS
    n, e = agents / machines, edges / machines
    bandwidth = gbits * 1e9 / 8  # bytes per second
    halo = halo_agents(agents, machines)
    halo_bytes = halo * EXCHANGED * PARAMETERS * RULES * 8
    metrics_bytes = costs["metrics_bytes_per_agent_not_owned"] * (agents - n)
    stage1_bytes = costs["stage1_bytes_per_owned_agent"] * agents * (machines - 1) / machines
    stage1_memory = (
        costs["base_bytes"] + costs["bytes_per_agent"] * agents + costs["bytes_per_edge"] * edges
    )
    held = (
        costs["rank_bytes_per_own_edge"] * e
        + costs["rank_bytes_per_own_agent"] * (n + halo)
        + costs["rank_bytes_per_network_agent"] * agents
    )
    rounds = costs["rank_imports_bytes"] + held + costs["rank_round_peak_bytes_per_own_edge"] * e
    one_part = 8 * RULES * (e + PARAMETERS * n)
    fast, slow = costs["rank_seconds_per_own_edge"]
    return {
        "assumptions": {
            "agents": agents,
            "machines": machines,
            "edges": edges,
            "network_gbit_per_s": gbits,
            "parameters": PARAMETERS,
            "rules": RULES,
        },
        "measured": costs,
        "halo_check_1e7_p2": {
            "measured_agents": costs["halo_bytes_measured_1e7_p2"]
            / (EXCHANGED * PARAMETERS * RULES * 8),
            "square_block_model_agents": halo_agents(1e7, 2),
        },
        "stage1": {
            "memory_gb_per_machine": stage1_memory / 1e9,
            "network_gb_in_per_machine_per_round": stage1_bytes / 1e9,
            "network_seconds_per_round": stage1_bytes / bandwidth,
            "compute_seconds_per_round_at_least": [
                costs["seconds_per_edge_1e6"] * edges / machines,
                costs["seconds_per_edge_1e7"] * edges / machines,
            ],
        },
        "stage2": {
            "agents_per_machine": n,
            "halo_agents_per_machine": halo,
            "memory_gb_per_machine": rounds / 1e9,
            "memory_of_network_agents_gb": costs["rank_bytes_per_network_agent"] * agents / 1e9,
            "checkpoint_gb_on_machine_0": 2 * one_part / 1e9,
            "halo_bytes_in_per_round": halo_bytes,
            "metrics_bytes_in_per_round": metrics_bytes,
            "network_seconds_per_round": (halo_bytes + metrics_bytes) / bandwidth,
            "compute_seconds_per_round": [fast * e, slow * e],
        },
    }


def table(result: dict[str, Any]) -> str:
    one, two, a = result["stage1"], result["stage2"], result["assumptions"]
    c1, c2 = one["compute_seconds_per_round_at_least"], two["compute_seconds_per_round"]
    network = (two["halo_bytes_in_per_round"] + two["metrics_bytes_in_per_round"]) / 1e9
    check = result["halo_check_1e7_p2"]
    return "\n".join(
        [
            f"{a['agents']:.0e} agents, {a['edges']:.0e} edges, {a['machines']} machines, "
            f"{a['network_gbit_per_s']:g} Gbit/s",
            f"{'':<8} {'memory GB/machine':>18} {'network in/round':>18} {'network s':>10} "
            f"{'compute s/round':>16}",
            f"{'stage 1':<8} {one['memory_gb_per_machine']:>18.1f} "
            f"{one['network_gb_in_per_machine_per_round']:>15.2f} GB "
            f"{one['network_seconds_per_round']:>10.2f} {f'>= {c1[0]:.1f}-{c1[1]:.1f}':>16}",
            f"{'stage 2':<8} {two['memory_gb_per_machine']:>18.1f} {network:>15.2f} GB "
            f"{two['network_seconds_per_round']:>10.2f} {f'{c2[0]:.1f}-{c2[1]:.1f}':>16}",
            f"stage 2: {two['agents_per_machine']:.3g} agents per machine, halo "
            f"{two['halo_agents_per_machine']:.0f} agents "
            f"({two['halo_bytes_in_per_round'] / 1e3:.0f} kB/round); the other agents' metrics "
            f"{two['metrics_bytes_in_per_round'] / 1e9:.2f} GB/round; "
            f"{two['memory_of_network_agents_gb']:.1f} GB of the memory is per agent of the "
            f"network; a checkpoint needs {two['checkpoint_gb_on_machine_0']:.1f} GB more on "
            "machine 0",
            f"halo at 1e7 agents, P = 2: measured {check['measured_agents']:.0f} agents, "
            f"square-block model {check['square_block_model_agents']:.0f}",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=float, default=1e8)
    parser.add_argument("--machines", type=int, default=16)
    parser.add_argument("--gbits", type=float, default=10.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = extrapolate(args.agents, args.machines, args.gbits)
    print(table(result))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
