"""Where the memory of one process, or of each rank of P, goes in a target-localization run:
each step's peak and the resident memory it leaves, and a census of the arrays held at the end
of a round, by what their length counts.

    .venv/bin/python -m benchmarks.rank_memory --agents 1e6 --rounds 4 --procs 1,2 \
        --out benchmarks/results/rank_memory.json

The run of ``benchmarks.distributed`` (the loss rule, 10 % attackers with the constant attack,
float64, one torch thread), the engine alone. Before each step the kernel's peak resident set
(``VmHWM``) is reset (writing 5 to ``/proc/self/clear_refs``), so each step reports its own
peak and the resident memory it leaves (``VmRSS``), in MB (2^20 bytes). The census walks every
object the garbage collector tracks and sums the distinct buffers of the numpy arrays and torch
tensors they hold (each counted once, at its whole storage) by the length that decides their
size: the rank's own edges (E_r, shards included), its own agents (N_r) or its table (own and
halo, T), every agent of the network (N), or anything else; ``bytes_per`` divides each class by
its count. Buffers under 64 kB are left out, as is memory no Python object holds (the
allocator's free lists, the interpreter, torch's libraries: ``imports``).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

SMALLEST = 1 << 16  # bytes: smaller buffers are not counted


def _status() -> dict[str, float]:
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = float(rest.split()[0]) / 1024
    return values


def _buffer(value: Any) -> tuple[int, int, int] | None:
    """(address, bytes, length) of the whole buffer under an array or tensor."""
    if isinstance(value, torch.Tensor):
        storage = value.untyped_storage()
        length = max(value.shape, default=1) if value.dim() else 1
        return storage.data_ptr(), storage.nbytes(), int(length)
    if isinstance(value, np.ndarray):
        base = value
        while isinstance(base.base, np.ndarray):
            base = base.base
        if base.base is not None or not base.nbytes:  # another library's memory
            return None
        return base.__array_interface__["data"][0], base.nbytes, max(base.shape, default=1)
    return None


def _members(holder: Any) -> list[Any]:
    if isinstance(holder, dict):
        return list(holder.values())
    if isinstance(holder, (list, tuple)):
        return list(holder)
    fields = getattr(type(holder), "__dataclass_fields__", None)
    try:
        values = vars(holder)
    except TypeError:
        return [getattr(holder, name, None) for name in fields or ()]
    return list(values.values()) if isinstance(values, dict) else []


def census(classes: dict[str, tuple[int, set[int]]]) -> dict[str, Any]:
    """MB of the distinct buffers held, by the class whose lengths their longest dimension
    matches (``classes[name]``: the count bytes are divided by, and the lengths), and bytes
    per counted thing."""
    seen: dict[int, tuple[int, int]] = {}
    for holder in gc.get_objects():
        try:
            with warnings.catch_warnings():  # deprecated objects warn when read
                warnings.simplefilter("ignore")
                members = _members(holder)
        except Exception:  # objects that refuse to be read are skipped
            continue
        for member in members:
            found = _buffer(member)
            if found is not None and found[1] >= SMALLEST:
                seen[found[0]] = found[1:]
    held = dict.fromkeys([*classes, "other"], 0)
    for size, length in seen.values():
        name = next((k for k, (_, lengths) in classes.items() if length in lengths), "other")
        held[name] += size
    return {
        "mb": {name: size / 2**20 for name, size in held.items()},
        "bytes_per": {name: held[name] / count for name, (count, _) in classes.items()},
    }


def rank_main(agents: int, rounds: int, out: Path) -> None:
    """One rank (or the only process): the steps' memory and the census, written to ``out``."""
    from benchmarks.distributed import agreed_prepare, config, started_rank
    from byzmtl import distributed

    place, world = started_rank()
    steps: list[dict[str, Any]] = []

    def step(name: str) -> None:
        now = _status()
        steps.append({"step": name, "peak_mb": now["VmHWM"], "resident_mb": now["VmRSS"]})
        Path("/proc/self/clear_refs").write_text("5")

    step("imports")
    simulation = agreed_prepare(config("tl", agents, rounds, 1, world), place).simulation
    step("prepare")
    edges, whole = simulation.edges, simulation.graph.n_agents
    shard_lengths = {shard.n_edges for shard in simulation.shards}
    own = edges.n_agents
    halo = getattr(simulation, "halo", None)  # a partitioned run's rank
    table = own if halo is None else len(halo.table)
    classes = {
        "own edges": (edges.n_edges, {edges.n_edges, *shard_lengths}),
        "own agents and halo": (own, {own, table}),
        "all agents": (whole, {whole}),
    }
    if world == 1:
        del classes["own agents and halo"]
    held: dict[str, Any] = {}

    def on_round(state: Any, output: Any) -> None:
        step(f"round {state.iteration}")
        if state.iteration == rounds:
            held.update(census(classes))

    simulation.run(on_round=on_round)
    step("end")
    counts = {name: count for name, (count, _) in classes.items()}
    record = {"rank": 0 if place is None else place.rank, "counts": counts}
    out.write_text(json.dumps({**record, "steps": steps, "held": held}))
    if place is not None:
        distributed.leave()


def measure(agents: int, rounds: int, procs: int) -> list[dict[str, Any]]:
    """Every rank's record, from fresh processes."""
    import os
    import subprocess

    from byzmtl import distributed

    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "benchmarks.rank_memory", "--rank-of", folder]
        command += ["--agents", str(agents), "--rounds", str(rounds)]
        root = Path(__file__).resolve().parent.parent
        if procs == 1:
            alone = {k: v for k, v in os.environ.items() if k not in distributed.GROUP_VARIABLES}
            status = subprocess.run(command, env=alone, cwd=root, check=False).returncode
        else:
            status = distributed.spawn(command, procs, quiet_peers=False)
        ranks = [json.loads(p.read_text()) for p in sorted(Path(folder).glob("rank-*.json"))]
    if status != 0 or len(ranks) != procs:
        raise RuntimeError(f"{procs} processes: exit status {status}, {len(ranks)} reported")
    return ranks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=float, default=1e6)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--procs", default="1,2")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--rank-of", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    agents = int(args.agents)
    if args.rank_of is not None:  # a rank started by measure()
        from byzmtl import distributed

        place = distributed.environment()
        rank_main(agents, args.rounds, args.rank_of / f"rank-{place.rank if place else 0}.json")
        return
    runs = []
    for procs in (int(p) for p in args.procs.split(",")):
        ranks = measure(agents, args.rounds, procs)
        runs.append({"agents": agents, "procs": procs, "rounds": args.rounds, "ranks": ranks})
        for rank in ranks:
            peaks = {s["step"]: round(s["peak_mb"]) for s in rank["steps"]}
            held = {k: f"{v:.1f}" for k, v in rank["held"]["bytes_per"].items()}
            print(f"P={procs} rank {rank['rank']}: peak MB {peaks}; bytes per {held}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {"mode": "rank memory", "threads": 1, "result": {"runs": runs}}
        args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
