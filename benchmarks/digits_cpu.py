"""Digit classification on this CPU: seconds per epoch per rule against the compute floor, the
choice of batching for the CNN, and the accuracies of a reduced run.

    python benchmarks/digits_cpu.py speed    --threads 1 [--epochs 1]
    python benchmarks/digits_cpu.py batching --threads 1
    python benchmarks/digits_cpu.py accuracy --threads 1 [--epochs 10]

``speed``: for each rule alone and for the four rules together (one replica each), the seconds of
one epoch of the paper setting (10 agents, 2000 images each, batches 64/128, 16 rounds), and the
compute floor measured in the same process: the time one plain ``torch.nn.Sequential`` CNN (the
faster of channels-first and channels-last, the best batch size of a sweep) needs for the same
number of image forward passes (scores, evaluation) and forward-and-backward passes (local
steps) in large plain batches. The counts come from replaying the epoch's data schedule.

``batching``: 10 CNNs each on its own 768 images (the issue's measurement): a Python loop over
plain modules, ``torch.func.vmap`` over ``functional_call``, and byzmtl's layer-wise batching.

``accuracy``: the reduced paper run (10 epochs, the four rules, without and with agents 2 and 7
attacking), final mean/min/max test accuracy per group.

MNIST is read from ``--mnist`` (default ../shared/data/mnist); synthetic digits are rendered (and
cached under $BYZMTL_CACHE). Every timing records the load average of the machine before it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import load_average, save

import byzmtl
from byzmtl.experiment import prepare
from byzmtl.tasks.digits import paper_cnn
from byzmtl.tasks.neural import LayerwiseForward, VmapForward

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
RULES = ["loss", "distance", "average", "none"]


def config(mnist: str, rules: list[str], epochs: int, attackers: int = 0) -> dict[str, Any]:
    return {
        "case": "digits",
        "rules": rules,
        "attackers": attackers,
        "seed": 0,
        "task": {"data_dir": mnist, "epochs": epochs},
    }


def workload(case: Any, replicas: int, scored: int, edges: int, rounds: range) -> dict[str, int]:
    """Images through the CNN in ``rounds``: forward only (scores of the ``scored`` replicas on
    every edge, end-of-epoch evaluation) and forward-and-backward (local steps)."""
    forward = backward = 0
    receivers = np.repeat(np.arange(case.n_agents), case.n_agents)  # complete graph
    for i in rounds:
        batch = case.batch(i)
        size = np.zeros(case.n_agents, dtype=np.int64)
        for group in batch.groups:
            size[group.agents.numpy()] = group.x.shape[1]
        forward += scored * int(size[receivers].sum())
        backward += replicas * int(size[batch.learners.numpy()].sum())
        if batch.epoch_end:
            evaluated = case.test_set[2].sum() + case.train_eval_set[2].sum()
            forward += replicas * int(evaluated)
    assert len(receivers) == edges
    return {"forward": forward, "forward_backward": backward}


def plain_rates(batch_sizes: tuple[int, ...] = (64, 128, 256, 512)) -> dict[str, Any]:
    """Images per second of one plain CNN: forward without gradients, forward and backward."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(1024, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (1024,), generator=generator)
    best: dict[str, Any] = {"forward": (0.0, None), "forward_backward": (0.0, None)}
    for layout in (torch.contiguous_format, torch.channels_last):
        model = paper_cnn().to(memory_format=layout)
        x = images.contiguous(memory_format=layout)
        for size in batch_sizes:
            for kind in best:
                times = []
                for _ in range(3):
                    started = time.perf_counter()
                    for s in range(0, len(x), size):
                        if kind == "forward":
                            with torch.no_grad():
                                model(x[s : s + size])
                        else:
                            loss = torch.nn.functional.cross_entropy(
                                model(x[s : s + size]), labels[s : s + size]
                            )
                            loss.backward()
                    times.append(time.perf_counter() - started)
                rate = len(x) / min(times)
                if rate > best[kind][0]:
                    name = "channels-last" if layout is torch.channels_last else "channels-first"
                    best[kind] = (rate, f"{name}, batch {size}")
    return {kind: {"images_per_second": r, "best": how} for kind, (r, how) in best.items()}


def speed(mnist: str, epochs: int) -> list[dict[str, Any]]:
    rows = []
    for rules in [[rule] for rule in RULES] + [RULES]:
        experiment = prepare(config(mnist, rules, epochs))
        case, simulation = experiment.case, experiment.simulation
        state = simulation.run(rounds=1)  # warm-up
        rounds = range(1, 1 + epochs * case.rounds_per_epoch)
        scored = sum(rule == "loss" for rule in rules)
        work = workload(case, len(rules), scored, experiment.graph.n_edges, rounds)
        before = load_average()
        started = time.perf_counter()
        simulation.run(state, rounds=len(rounds))
        seconds = (time.perf_counter() - started) / epochs
        rates = plain_rates()
        floor = sum(work[k] / rates[k]["images_per_second"] for k in work) / epochs
        row = {
            "rules": rules,
            "seconds_per_epoch": seconds,
            "floor_seconds_per_epoch": floor,
            "ratio": seconds / floor,
            "images": work,
            "plain_rates": rates,
            "load_before": before,
            "load_after": load_average(),
        }
        print(json.dumps(row))
        rows.append(row)
    return rows


def batching() -> dict[str, Any]:
    """10 CNNs, each on its own 768 images: loop vs vmap vs layer-wise batching."""
    torch.manual_seed(0)
    models = [paper_cnn() for _ in range(10)]
    x = torch.rand(10, 768, 1, 28, 28)
    params = torch.stack([torch.nn.utils.parameters_to_vector(m.parameters()) for m in models])
    index = torch.arange(10)
    plans = {
        "loop over plain modules": lambda: [m(x[g]) for g, m in enumerate(models)],
        "loop, channels-last": lambda: [
            m.to(memory_format=torch.channels_last)(
                x[g].contiguous(memory_format=torch.channels_last)
            )
            for g, m in enumerate(models)
        ],
        "torch.func.vmap": lambda: VmapForward(models[0])(params, x, index),
        "layer-wise, one call": lambda: LayerwiseForward.build(models[0], (1, 28, 28))(
            params, x, index
        ),
        "layer-wise, 160 images per call": lambda: [
            LayerwiseForward.build(models[0], (1, 28, 28))(
                params[g : g + 1], x[:, s : s + 160], index[g : g + 1]
            )
            for g in range(10)
            for s in range(0, 768, 160)
        ],
    }
    out: dict[str, Any] = {"load_before": load_average()}
    with torch.no_grad():
        for name, plan in plans.items():
            plan()
            times = []
            for _ in range(3):
                started = time.perf_counter()
                plan()
                times.append(time.perf_counter() - started)
            out[name] = min(times)
            print(f"{name:35s} {min(times):6.2f} s")
    out["load_after"] = load_average()
    return out


def accuracy(mnist: str, epochs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attackers in (0, 2):
        result = byzmtl.run(config(mnist, RULES, epochs, attackers), progress=True)
        table = result.metrics
        curves = {}
        for group in ("mnist", "synthetic"):
            part = table[table.group == group]
            curves[group] = {
                rule: part[part.rule == rule][["epoch", "accuracy_mean"]].values.tolist()
                for rule in RULES
            }
        out[str(attackers)] = {
            "byzantine": result.summary["byzantine"],
            "compute_seconds": result.summary["compute_seconds"],
            "final": {
                group: {
                    rule: {
                        s: result.final(rule, "accuracy", s, group) for s in ("mean", "min", "max")
                    }
                    for rule in RULES
                }
                for group in ("mnist", "synthetic")
            },
            "curves": curves,
        }
        print(json.dumps(out[str(attackers)]["final"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["speed", "batching", "accuracy"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--mnist", default=str(MNIST))
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.mode == "speed":
        result: Any = speed(args.mnist, args.epochs or 1)
    elif args.mode == "batching":
        result = batching()
    else:
        result = accuracy(args.mnist, args.epochs or 10)
    save(args.out, args.mode, args.threads, result)


if __name__ == "__main__":
    main()
