"""Human activity recognition, full paper setting: accuracies, seconds per epoch, data loading.

    python benchmarks/har_paper.py load     [--threads 1]
    python benchmarks/har_paper.py speed    [--threads 1] [--epochs 10]
    python benchmarks/har_paper.py accuracy [--threads 1] [--seeds 0 1 2] [--nu 0.05]

``load``: seconds to read the UCI HAR folder (``load_har``) and to build the whole case study
(``prepare``: reading, per-subject splits, tensors), best and median of five.
``speed``: seconds per epoch of each rule alone and of the four together (one replica per rule),
timed over ``--epochs`` epochs after one warm-up epoch, without attackers (the setting of the
authors' timing: 0.72 s per epoch with the loss rule, 0.45-0.50 s with the others).
``accuracy``: 30 agents, 50 epochs, the four rules in one run, 0, 10 and 29 attackers (the
default attack, the authors' ``paper-scaled``): final (epoch 50) mean, min and max test accuracy
over normal agents, per seed.

Data: ``--data`` (default ../shared/data/har/UCI HAR Dataset). Timings record the load average.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from common import load_average, save

import byzmtl
from byzmtl.datasets import load_har
from byzmtl.experiment import prepare

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "har" / "UCI HAR Dataset"
RULES = ["loss", "distance", "average", "none"]


def config(data: str, rules: list[str], epochs: int, **extra: Any) -> dict[str, Any]:
    return {"case": "har", "rules": rules, "task": {"data_dir": data, "epochs": epochs}, **extra}


def loading(data: str) -> dict[str, Any]:
    out: dict[str, Any] = {"load_before": load_average()}
    for name, step in (
        ("load_har", lambda: load_har(data)),
        ("prepare", lambda: prepare(config(data, RULES, 50))),
    ):
        times = []
        for _ in range(5):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        out[name] = {"best": min(times), "median": statistics.median(times)}
        print(f"{name:10s} best {min(times):.3f} s, median {statistics.median(times):.3f} s")
    out["load_after"] = load_average()
    return out


def speed(data: str, epochs: int) -> list[dict[str, Any]]:
    rows = []
    for rules in [[rule] for rule in RULES] + [RULES]:
        experiment = prepare(config(data, rules, epochs + 1))
        simulation, per_epoch = experiment.simulation, experiment.case.rounds_per_epoch
        state = simulation.run(rounds=per_epoch)  # warm-up epoch
        before = load_average()
        started = time.perf_counter()
        simulation.run(state, rounds=epochs * per_epoch)
        seconds = (time.perf_counter() - started) / epochs
        row = {
            "rules": rules,
            "seconds_per_epoch": seconds,
            "rounds_per_epoch": per_epoch,
            "speedup_vs_authors": (0.72 if rules == ["loss"] else 0.475) / seconds,
            "load_before": before,
            "load_after": load_average(),
        }
        print(json.dumps(row))
        rows.append(row)
    return rows


def accuracy(data: str, seeds: list[int], nu: float | None) -> list[dict[str, Any]]:
    rows = []
    for seed in seeds:
        for attackers in (0, 10, 29):
            extra: dict[str, Any] = {"seed": seed, "attackers": attackers}
            if nu is not None:
                extra["nu"] = nu
            result = byzmtl.run(config(data, RULES, 50, **extra))
            row = {
                "seed": seed,
                "attackers": attackers,
                "attack": result.config.attack,
                "nu": result.config.nu,
                "compute_seconds": result.summary["compute_seconds"],
                "final": {
                    rule: {s: result.final(rule, "accuracy", s) for s in ("mean", "min", "max")}
                    for rule in RULES
                },
            }
            print(json.dumps(row))
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["load", "speed", "accuracy"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--nu", type=float)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.mode == "load":
        result: Any = loading(args.data)
    elif args.mode == "speed":
        result = speed(args.data, args.epochs)
    else:
        result = accuracy(args.data, args.seeds, args.nu)
    save(args.out, args.mode, args.threads, result)


if __name__ == "__main__":
    main()
