"""Stage 1 of the distributed engine, timed: seconds per round, bytes exchanged per round and the
share of a round spent in the exchange, for P processes on this machine.

    .venv/bin/python benchmarks/distributed.py --agents 1e5 --rounds 10 --procs 1,2 \
        --out benchmarks/results/distributed_1e5.json

Target localization, the loss rule, 10 % attackers (constant attack), float64, the engine's
default shards, one torch thread per process. Every process computes the replicated steps
(adapt, send) itself; the exchange is one ``all_gather_object`` per round
(:mod:`byzmtl.engine.ranks`), timed here on every rank, with the pickled size of what each rank
sends. Rounds after the first are timed (the first builds the shards' layouts).
"""

from __future__ import annotations

import argparse
import itertools
import json
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import load_average, save


def config(agents: int, rounds: int, procs: int) -> dict[str, Any]:
    return {
        "case": "target-localization",
        "rules": ["loss"],
        "attackers": agents // 10,
        "procs": procs,
        "task": {"agents": agents, "iterations": rounds},
    }


def rank_main(agents: int, rounds: int, out: Path) -> None:
    """One rank (or the only process): time every round and every exchange."""
    from byzmtl import distributed
    from byzmtl.engine.ranks import Ranks
    from byzmtl.experiment import prepare

    torch.set_num_threads(1)
    place = distributed.environment()
    world = 1 if place is None else place.world
    if place is not None:
        distributed.join(place, "cpu")
    exchanges: list[tuple[float, int]] = []
    gathered = Ranks.gathered

    def timed(self: Ranks, value: Any) -> list[Any]:
        size = len(pickle.dumps(value))
        started = time.perf_counter()
        result = gathered(self, value)
        exchanges.append((time.perf_counter() - started, size))
        return result

    Ranks.gathered = timed  # type: ignore[method-assign]
    built = time.perf_counter()
    experiment = prepare(config(agents, rounds, world))
    setup = time.perf_counter() - built
    simulation = experiment.simulation
    marks = [time.perf_counter()]
    simulation.run(on_round=lambda state, output: marks.append(time.perf_counter()))
    rounds_s = [b - a for a, b in itertools.pairwise(marks)][1:]
    per_round = exchanges[1:]  # one exchange per round (none at P = 1)
    record = {
        "rank": 0 if place is None else place.rank,
        "setup_s": setup,
        "shards": len(simulation.shards),
        "seconds_per_round": sum(rounds_s) / len(rounds_s),
        "exchange_seconds_per_round": sum(t for t, _ in per_round) / max(1, len(per_round)),
        "bytes_sent_per_round": sum(b for _, b in per_round) / max(1, len(per_round)),
    }
    record["communicating_fraction"] = (
        record["exchange_seconds_per_round"] / record["seconds_per_round"]
    )
    out.write_text(json.dumps(record))
    if place is not None:
        distributed.leave()


def measure(agents: int, rounds: int, procs: int) -> dict[str, Any]:
    from byzmtl import distributed

    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "benchmarks.distributed", "--rank-of", folder]
        command += ["--agents", str(agents), "--rounds", str(rounds)]
        started = time.perf_counter()
        if procs == 1:
            rank_main(agents, rounds, Path(folder) / "rank-0.json")
        else:
            distributed.spawn([*command, "--procs", str(procs)], procs)
        wall = time.perf_counter() - started
        ranks = [json.loads(p.read_text()) for p in sorted(Path(folder).glob("rank-*.json"))]
    if len(ranks) != procs:
        raise RuntimeError(f"{procs} processes: {len(ranks)} reported")
    received = sum(r["bytes_sent_per_round"] for r in ranks)  # every rank receives all of them
    return {
        "agents": agents,
        "procs": procs,
        "rounds_timed": rounds - 1,
        "wall_s": wall,
        "seconds_per_round": max(r["seconds_per_round"] for r in ranks),
        "bytes_received_per_round_per_rank": received if procs > 1 else 0,
        "communicating_fraction": max(r["communicating_fraction"] for r in ranks),
        "ranks": ranks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=float, default=1e5)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--procs", default="1,2")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--rank-of", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    agents = int(args.agents)
    if args.rank_of is not None:  # a rank started by measure()
        from byzmtl import distributed

        place = distributed.environment()
        rank = 0 if place is None else place.rank
        rank_main(agents, args.rounds, args.rank_of / f"rank-{rank}.json")
        return
    before = load_average()
    results = [measure(agents, args.rounds, int(p)) for p in args.procs.split(",")]
    for r in results:
        print(
            f"{r['agents']:>8} agents, P={r['procs']}: {r['seconds_per_round']:.3f} s/round, "
            f"{r['bytes_received_per_round_per_rank'] / 1e6:.1f} MB received per rank per round, "
            f"{100 * r['communicating_fraction']:.0f} % of a round in the exchange"
        )
    result = {"load_before": before, "load_after": load_average(), "runs": results}
    save(args.out, "distributed-stage1", 1, result)


if __name__ == "__main__":
    main()
