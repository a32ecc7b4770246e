"""1e8 agents on 16 machines, extrapolated from measured costs (target localization, geometric
graph at the paper's density, at most 10 neighbours, loss rule, float64).

    python benchmarks/extrapolate.py [--agents 1e8] [--machines 16] [--gbits 10] \
        [--out benchmarks/results/extrapolation_1e8.json]

Measured inputs (read from benchmarks/results/): the memory fit of one process,
``memory_scaling.json`` (bytes = base + a agents + e edges); seconds per round of one process,
one thread, at 1e6 agents (``distributed_table.json``) and at 1e7 (``memory_scaling_1e7.json``,
on a loaded machine); the bytes a rank sends per round per agent it owns at P = 2
(``distributed_table.json``, tl 1e6).

Two designs:

- stage 1, as built: every machine holds the whole network and computes the replicated steps
  for every agent; every round each machine receives the other machines' shard results
  (bytes per owned agent x agents x (M - 1) / M);
- stage 2, not built: a machine holds only its n = N / M agents (contiguous ranges of
  receivers, numbered so that neighbours in the plane are near in number, e.g. along a
  space-filling curve) and receives, each round, the psi rows of the senders outside its range
  (its halo). With N agents uniform on a square cut into M square blocks and k neighbours
  within radius r (pi r^2 rho = k, rho = N / area), a block's halo is its perimeter times r
  times rho: 4 (L / sqrt(M)) r rho = 4 sqrt(k N / (pi M)) agents; each sends d float64
  parameters per rule. Per-round compute scales with the machine's edges at the measured cost
  per edge (a range: the 1e6 cost, in cache, and the 1e7 cost, memory-bound); the network time
  is the halo's bytes at the stated bandwidth (latency and the few scalars of the metrics'
  reductions left out).
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


def _scaling(name: str, agents: int) -> dict[str, Any]:
    rows = json.loads((RESULTS / name).read_text())["scaling"]
    return next(r for r in rows if r["agents"] == agents and r["neighbours"] == NEIGHBOURS)


def measured() -> dict[str, float]:
    """The measured costs the extrapolation uses."""
    fit = json.loads((RESULTS / "memory_scaling.json").read_text())["memory_fit"]
    large = _scaling("memory_scaling_1e7.json", 10**7)
    runs = json.loads((RESULTS / "distributed_table.json").read_text())["result"]["runs"]
    tl = {r["procs"]: r for r in runs if r["case"] == "tl" and r["agents"] == 10**6}
    sent = max(max(rank["sent_bytes"]) for rank in tl[2]["ranks"])
    return {
        "bytes_per_agent": fit["bytes_per_agent"],
        "bytes_per_edge": fit["bytes_per_edge"],
        "base_bytes": fit["base_gb"] * 1e9,
        "seconds_per_edge_1e6": tl[1]["seconds_per_round"] / (tl[1]["agents"] * NEIGHBOURS),
        "seconds_per_edge_1e7": large["seconds_per_round"] / large["edges"],
        "stage1_bytes_per_owned_agent": sent / (tl[2]["agents"] / 2),
    }


def extrapolate(agents: float, machines: int, gbits: float) -> dict[str, Any]:
    costs = measured()
    edges = agents * NEIGHBOURS
    n, e = agents / machines, edges / machines
    bandwidth = gbits * 1e9 / 8  # bytes per second
    halo = 4 * math.sqrt(NEIGHBOURS * agents / (math.pi * machines))
    halo_bytes = halo * PARAMETERS * RULES * 8
    stage1_bytes = costs["stage1_bytes_per_owned_agent"] * agents * (machines - 1) / machines

    def memory(a: float, k: float) -> float:
        return costs["base_bytes"] + costs["bytes_per_agent"] * a + costs["bytes_per_edge"] * k

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
        "stage1": {
            "memory_gb_per_machine": memory(agents, edges) / 1e9,
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
            "memory_gb_per_machine": memory(n + halo, e) / 1e9,
            "network_bytes_in_per_machine_per_round": halo_bytes,
            "network_seconds_per_round": halo_bytes / bandwidth,
            "compute_seconds_per_round": [
                costs["seconds_per_edge_1e6"] * e,
                costs["seconds_per_edge_1e7"] * e,
            ],
        },
    }


def table(result: dict[str, Any]) -> str:
    one, two, a = result["stage1"], result["stage2"], result["assumptions"]
    c1, c2 = one["compute_seconds_per_round_at_least"], two["compute_seconds_per_round"]
    return "\n".join(
        [
            f"{a['agents']:.0e} agents, {a['edges']:.0e} edges, {a['machines']} machines, "
            f"{a['network_gbit_per_s']:g} Gbit/s",
            f"{'':<8} {'memory GB/machine':>18} {'network in/round':>18} {'network s':>10} "
            f"{'compute s/round':>16}",
            f"{'stage 1':<8} {one['memory_gb_per_machine']:>18.1f} "
            f"{one['network_gb_in_per_machine_per_round']:>15.1f} GB "
            f"{one['network_seconds_per_round']:>10.1f} {f'>= {c1[0]:.1f}-{c1[1]:.1f}':>16}",
            f"{'stage 2':<8} {two['memory_gb_per_machine']:>18.1f} "
            f"{two['network_bytes_in_per_machine_per_round'] / 1e3:>15.0f} kB "
            f"{two['network_seconds_per_round']:>10.4f} {f'{c2[0]:.1f}-{c2[1]:.1f}':>16}",
            f"stage 2 halo: {two['halo_agents_per_machine']:.0f} agents per machine "
            f"(of {two['agents_per_machine']:.3g})",
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
