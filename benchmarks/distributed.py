"""Stage 1 of the distributed engine, timed: seconds per round, peak memory per rank, bytes
exchanged per round and the share of a round spent in the exchange, for P processes on this
machine.

    .venv/bin/python -m benchmarks.distributed --case tl --agents 1e5 --rounds 12 --procs 1,2 \
        --out benchmarks/results/distributed_table.json
    .venv/bin/python -m benchmarks.distributed --case tl --agents 1e6 --rounds 7 --procs 1,2 \
        --out benchmarks/results/distributed_table.json
    BYZMTL_DATA=/work/shared/data .venv/bin/python -m benchmarks.distributed --case har \
        --epochs 11 --procs 1,2 --out benchmarks/results/distributed_table.json
    BYZMTL_DATA=/work/shared/data .venv/bin/python -m benchmarks.distributed --case digits \
        --epochs 2 --procs 1,2 --out benchmarks/results/distributed_table.json

Cases: ``tl`` target localization at the paper's density (at most 10 neighbours), the loss rule,
10 % attackers (constant attack), float64; ``har`` the full HAR data (``$BYZMTL_DATA/har``), 30
agents, the four rules in one run, no attackers; ``digits`` configs/digits-demo.toml on the full
MNIST files (``$BYZMTL_DATA/mnist``), with ``--epochs`` epochs. The engine's default shards, one
torch thread per process, glibc's mmap threshold fixed as the command line fixes it. The engine
alone (``Simulation.run``), or with ``--record`` the whole run as ``byzmtl run`` makes it
(``byzmtl.run``: the metrics and diagnostics recorded, the summary made; no folder written).

Every measurement starts fresh processes (P = 1 too: one process, no group), so each rank's peak
resident memory (``ru_maxrss``) is its own run's. Each rank times every round and reads its
exchange's counts (:class:`byzmtl.engine.ranks.Traffic`: bytes sent and received, seconds in
the collectives, seconds pickling); the first round (``tl``) or the first epoch (``har``,
``digits``) is a warm-up and is not timed. Reported: the median over the timed rounds of the
slowest rank's round, the bytes per round, the medians of the exchange's seconds and their share
of the round (the wait in the collectives includes waiting for a slower rank; the transfer alone
is the wait of the rank that arrived last, the smallest wait of each round). Before each
measurement the script waits (at most ``--quiet-wait`` seconds) for the one-minute load average
to fall under 1.5, and records it before and after.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import load_average

ROOT = Path(__file__).resolve().parent.parent
CASES = ("tl", "har", "digits")


def data_root() -> Path:
    root = os.environ.get("BYZMTL_DATA")
    if not root:
        raise SystemExit("BYZMTL_DATA: the folder of the full data sets (har/, mnist/) is not set")
    return Path(root)


def config(case: str, agents: int, rounds: int, epochs: int, procs: int) -> dict[str, Any]:
    """The run measured: see the module docstring."""
    if case == "tl":
        return {
            "case": "target-localization",
            "rules": ["loss"],
            "attackers": agents // 10,
            "procs": procs,
            "task": {"agents": agents, "iterations": rounds},
        }
    if case == "har":
        har = data_root() / "har" / "UCI HAR Dataset"
        return {
            "case": "har",
            "rules": ["loss", "distance", "average", "none"],
            "procs": procs,
            "task": {"data_dir": str(har), "epochs": epochs},
        }
    from byzmtl.config import read_toml

    digits = read_toml(ROOT / "configs" / "digits-demo.toml")
    digits["task"] = {**digits["task"], "data_dir": str(data_root() / "mnist"), "epochs": epochs}
    return {**digits, "procs": procs}


def started_rank() -> tuple[Any, int]:
    """This process as a benchmark's rank (or only process) runs: glibc's heap retention as the
    command line sets it, one torch thread, the group joined where the launcher set its
    variables. Returns the place in the group (None alone) and the group's size."""
    from byzmtl import distributed
    from byzmtl.allocator import limit_heap_retention

    limit_heap_retention()
    torch.set_num_threads(1)
    place = distributed.environment()
    if place is not None:
        distributed.join(place, "cpu")
    return place, 1 if place is None else place.world


def agreed_prepare(settings: dict[str, Any], place: Any) -> Any:
    """``prepare(settings)``, agreed over the ranks as ``byzmtl run`` agrees it: one rank's
    setup error is every rank's, not a lost peer."""
    from byzmtl.engine.ranks import Ranks
    from byzmtl.experiment import prepare

    if place is None:
        return prepare(settings)
    return Ranks.current().agree(lambda: prepare(settings))


def rank_main(args: argparse.Namespace, out: Path) -> None:
    """One rank (or the only process): time every round, read the exchange's counts."""
    from byzmtl import distributed

    place, world = started_rank()
    built = time.perf_counter()
    experiment = agreed_prepare(
        config(args.case, int(args.agents), args.rounds, args.epochs, world), place
    )
    setup = time.perf_counter() - built
    setup_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    simulation = experiment.simulation
    warm_up = getattr(simulation.task, "rounds_per_epoch", 1)
    ranks = simulation.ranks
    marks = [time.perf_counter()]
    before_end: list[float] = []
    exchanges: list[int] = []  # each round's entry of the traffic: the round's gather, the
    # last before on_round (the recording's own set-up collectives come before the first)

    def on_round(state: Any, output: Any) -> None:
        marks.append(time.perf_counter())
        before_end[:] = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9]
        if ranks is not None:
            exchanges.append(len(ranks.traffic) - 1)

    if args.record:  # the whole run: recorded as byzmtl run records it
        from byzmtl.experiment import run

        run(experiment, on_round=on_round)
    else:
        simulation.run(on_round=on_round)
    rounds = [b - a for a, b in itertools.pairwise(marks)]
    record: dict[str, Any] = {
        "rank": 0 if place is None else place.rank,
        "setup_s": setup,
        "shards": len(simulation.shards),
        "warm_up_rounds": warm_up,
        "round_s": rounds,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
        "setup_peak_rss_gb": setup_peak,  # by the end of prepare (graph, case study, engine)
        "rounds_peak_rss_gb": before_end[0],  # by the end of the last round, before the run's end
    }
    if ranks is not None:  # one gather per round (a partitioned run: one more, its end)
        traffic = ranks.traffic
        record["engine"] = type(simulation).__name__
        record["sent_bytes"] = [traffic.sent[i] for i in exchanges]
        record["received_bytes"] = [traffic.received[i] for i in exchanges]
        record["wait_s"] = [traffic.wait_seconds[i] for i in exchanges]
        record["codec_s"] = [traffic.codec_seconds[i] for i in exchanges]
        record["halo_sent_bytes"] = traffic.halo_sent
        record["halo_received_bytes"] = traffic.halo_received
        record["halo_s"] = traffic.halo_seconds
        if len(record["sent_bytes"]) != len(rounds):  # pragma: no cover - one per round
            raise RuntimeError(f"{len(rounds)} rounds, {len(record['sent_bytes'])} gathers")
    out.write_text(json.dumps(record))
    if place is not None:
        distributed.leave()


def wait_for_quiet(limit: float, below: float = 1.5) -> float:
    """Seconds waited (at most ``limit``) for the one-minute load average to fall below
    ``below``."""
    started = time.monotonic()
    while load_average() >= below and time.monotonic() - started < limit:
        time.sleep(5)
    return time.monotonic() - started


def measure(args: argparse.Namespace, procs: int) -> dict[str, Any]:
    """One measurement in fresh processes (see the module docstring)."""
    from byzmtl import distributed

    waited = wait_for_quiet(args.quiet_wait)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "benchmarks.distributed", "--rank-of", folder]
        command += ["--case", args.case, "--agents", str(int(args.agents))]
        command += ["--rounds", str(args.rounds), "--epochs", str(args.epochs)]
        command += ["--record"] if args.record else []
        started = time.perf_counter()
        if procs == 1:
            alone = {k: v for k, v in os.environ.items() if k not in distributed.GROUP_VARIABLES}
            status = subprocess.run(command, env=alone, cwd=ROOT, check=False).returncode
        else:
            status = distributed.spawn(command, procs, quiet_peers=False)
        wall = time.perf_counter() - started
        ranks = [json.loads(p.read_text()) for p in sorted(Path(folder).glob("rank-*.json"))]
    if status != 0 or len(ranks) != procs:
        raise RuntimeError(f"{procs} processes: exit status {status}, {len(ranks)} reported")
    return summarise(args, procs, ranks, wall, waited, load_before, os.getloadavg())


def summarise(
    args: argparse.Namespace,
    procs: int,
    ranks: list[dict[str, Any]],
    wall: float,
    waited: float,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> dict[str, Any]:
    """The table's row: medians over the timed rounds (after the warm-up)."""
    skip = ranks[0]["warm_up_rounds"]
    timed = range(skip, len(ranks[0]["round_s"]))
    slowest = [max(r["round_s"][i] for r in ranks) for i in timed]
    row: dict[str, Any] = {
        "case": args.case,
        "agents": int(args.agents) if args.case == "tl" else None,
        "procs": procs,
        "rounds_timed": len(timed),
        "rounds_per_epoch": skip if args.case != "tl" else None,
        "wall_s": wall,
        "setup_s": max(r["setup_s"] for r in ranks),
        "shards": ranks[0]["shards"],
        "seconds_per_round": statistics.median(slowest),
        "seconds_per_epoch": sum(slowest) / (len(timed) / skip) if args.case != "tl" else None,
        "peak_rss_gb_per_rank": [r["peak_rss_gb"] for r in ranks],
        "setup_peak_rss_gb_per_rank": [r.get("setup_peak_rss_gb") for r in ranks],
        "rounds_peak_rss_gb_per_rank": [r.get("rounds_peak_rss_gb") for r in ranks],
        "quiet_wait_s": waited,
        "load_before": list(load_before),
        "load_after": list(load_after),
    }
    if procs > 1:
        row["sent_bytes_per_round_per_rank"] = [
            statistics.median(r["sent_bytes"][i] for i in timed) for r in ranks
        ]
        row["received_bytes_per_round_per_rank"] = [
            statistics.median(r["received_bytes"][i] for i in timed) for r in ranks
        ]
        row["engine"] = ranks[0]["engine"]
        if ranks[0]["halo_s"]:  # partitioned: the halo's all_to_all besides the gather
            for key in ("halo_sent_bytes", "halo_received_bytes"):
                row[f"{key}_per_round_per_rank"] = [
                    statistics.median(r[key][i] for i in timed) for r in ranks
                ]
            row["halo_fraction_per_rank"] = [
                statistics.median(r["halo_s"][i] / r["round_s"][i] for i in timed) for r in ranks
            ]
        for key in ("wait_s", "codec_s"):
            row[f"{key}_per_round_per_rank"] = [
                statistics.median(r[key][i] for i in timed) for r in ranks
            ]
            row[f"{key[:-2]}_fraction_per_rank"] = [  # median of each round's share
                statistics.median(r[key][i] / r["round_s"][i] for i in timed) for r in ranks
            ]
        row["transfer_s_per_round"] = statistics.median(  # the last rank to arrive waits
            min(r["wait_s"][i] for r in ranks)
            for i in timed  # only for the transfer
        )
        row["transfer_fraction"] = row["transfer_s_per_round"] / row["seconds_per_round"]
    row["ranks"] = ranks
    return row


def merged(out: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``out``'s rows, those of the same case, size and P replaced by ``rows``."""
    key = ("case", "agents", "procs")
    old = json.loads(out.read_text())["result"]["runs"] if out.exists() else []
    new = {tuple(r[k] for k in key) for r in rows}
    kept = [r for r in old if tuple(r[k] for k in key) not in new]
    order = {case: i for i, case in enumerate(CASES)}
    runs = sorted(kept + rows, key=lambda r: (order[r["case"]], r["agents"] or 0, r["procs"]))
    return {"mode": "distributed", "threads": 1, "result": {"runs": runs}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=CASES, default="tl")
    parser.add_argument("--agents", type=float, default=1e5, help="tl: the network's size")
    parser.add_argument("--rounds", type=int, default=12, help="tl: rounds, the first a warm-up")
    parser.add_argument("--epochs", type=int, default=2, help="har, digits: the first a warm-up")
    parser.add_argument("--procs", default="1,2")
    parser.add_argument("--quiet-wait", type=float, default=60.0)
    parser.add_argument(
        "--record", action="store_true", help="the whole run (byzmtl.run), not the engine alone"
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument("--rank-of", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank_of is not None:  # a rank started by measure()
        from byzmtl import distributed

        place = distributed.environment()
        rank_main(args, args.rank_of / f"rank-{0 if place is None else place.rank}.json")
        return
    rows = []
    for procs in (int(p) for p in args.procs.split(",")):
        row = measure(args, procs)
        rows.append(row)
        line = f"{args.case} {row['agents'] or ''} P={procs}: "
        line += f"{row['seconds_per_round']:.4f} s/round"
        line += f", peak {max(row['peak_rss_gb_per_rank']):.2f} GB/rank"
        line += f" ({max(row['setup_peak_rss_gb_per_rank']):.2f} by the end of setup,"
        line += f" {max(row['rounds_peak_rss_gb_per_rank']):.2f} of the rounds)"
        if procs > 1:
            line += f", {max(row['received_bytes_per_round_per_rank']) / 1e6:.1f} MB in/rank/round"
            line += f", exchange {100 * max(row['wait_fraction_per_rank']):.0f} % (wait)"
            line += f" + {100 * max(row['codec_fraction_per_rank']):.0f} % (pickle)"
        print(line + f"; load {row['load_before'][0]:.2f} -> {row['load_after'][0]:.2f}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(merged(args.out, rows), indent=1) + "\n")


if __name__ == "__main__":
    main()
