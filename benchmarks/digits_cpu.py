"""Digit classification on this CPU: seconds per epoch per rule against the compute floor, the
choice of batching for the CNN, the accuracies of a reduced run, and the 3-minute demo.

    python benchmarks/digits_cpu.py speed    --threads 1 [--epochs 1] [--repeats 3]
    python benchmarks/digits_cpu.py batching --threads 1
    python benchmarks/digits_cpu.py accuracy --threads 1 [--epochs 10]
    python benchmarks/digits_cpu.py demo     --threads 1 [--seeds 0 1 2]

``speed``: for each rule alone and for the four rules together (one replica each), the seconds of
one epoch of the paper setting (10 agents, 2000 images each, batches 64/128, 16 rounds), timed
``--repeats`` times (default 3), each followed by its compute floor: one plain
``torch.nn.Sequential`` CNN, at its fastest layout and batch size (a sweep, best of 3), doing
the epoch's image forward passes (scores, evaluation) and forward-and-backward passes (local
steps) in large plain batches, timed as one run like the epoch. The counts come from replaying
each epoch's data schedule. ``ratio`` is the median of the per-epoch ratios.

``batching``: 10 CNNs each on its own 768 images (the issue's measurement): a Python loop over
plain modules, ``torch.func.vmap`` over ``functional_call``, and byzmtl's layer-wise batching.

``accuracy``: the reduced paper run (10 epochs, the four rules, without and with agents 2 and 7
attacking), final mean/min/max test accuracy per group.

``demo``: ``configs/digits-demo.toml`` as a user runs it, one whole ``byzmtl run`` process per
seed, with agents 2 and 7 attacking (the config's default) and without (``--attackers 0``), one
after the other: seconds of the whole process (wall clock, and its CPU seconds), the load average
before and after, whether the rendered synthetic digits were already cached, and the final test
accuracy of every rule per group (mean, min, max over normal agents) from ``summary.json``.
Default output: benchmarks/results/digits_demo.json.

MNIST is read from ``--mnist`` (default $BYZMTL_DATA/mnist, else ../shared/data/mnist); synthetic
digits are rendered (and cached under $BYZMTL_CACHE). Every timing records the load average.
"""

from __future__ import annotations

import argparse
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

import numpy as np
import torch
from common import load_average, save

import byzmtl
from byzmtl.experiment import prepare
from byzmtl.tasks.digits import paper_cnn
from byzmtl.tasks.neural import LayerwiseForward, VmapForward

MNIST = (
    Path(os.environ["BYZMTL_DATA"]) / "mnist"
    if os.environ.get("BYZMTL_DATA")
    else Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
)
RULES = ["loss", "distance", "average", "none"]
ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "digits-demo.toml"
DEMO_OUT = ROOT / "benchmarks" / "results" / "digits_demo.json"


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


def _plain_pass(
    model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, kind: str, images: int, size: int
) -> float:
    """Seconds for one plain CNN to take ``images`` images (cycling through ``x``) in batches of
    ``size``: forward without gradients, or forward and backward."""
    started = time.perf_counter()
    for done in range(0, images, size):
        s = done % len(x)
        batch = slice(s, s + min(size, images - done, len(x) - s))
        if kind == "forward":
            with torch.no_grad():
                model(x[batch])
        else:
            torch.nn.functional.cross_entropy(model(x[batch]), labels[batch]).backward()
    return time.perf_counter() - started


def plain_setup(batch_sizes: tuple[int, ...] = (64, 128, 256, 512)) -> dict[str, Any]:
    """The fastest layout and batch size of one plain CNN for each kind of pass (a sweep over
    1024 images, best of 3), with the model and images to run it on."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(1024, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (1024,), generator=generator)
    best: dict[str, Any] = {}
    for layout in (torch.contiguous_format, torch.channels_last):
        model = paper_cnn().to(memory_format=layout)
        x = images.contiguous(memory_format=layout)
        for size in batch_sizes:
            for kind in ("forward", "forward_backward"):
                seconds = min(_plain_pass(model, x, labels, kind, len(x), size) for _ in range(3))
                if kind not in best or len(x) / seconds > best[kind]["sweep_rate"]:
                    name = "channels-last" if layout is torch.channels_last else "channels-first"
                    best[kind] = {
                        "sweep_rate": len(x) / seconds,
                        "config": f"{name}, batch {size}",
                        "run": (model, x, labels, size),
                    }
    return best


def plain_floor(setup: dict[str, Any], work: dict[str, int]) -> tuple[float, dict[str, float]]:
    """Seconds for one plain CNN, at its fastest setting, to do ``work`` (images per kind of
    pass), timed as one run like an epoch; and its images per second per kind."""
    seconds, rates = 0.0, {}
    for kind, images in work.items():
        model, x, labels, size = setup[kind]["run"]
        spent = _plain_pass(model, x, labels, kind, images, size)
        seconds += spent
        rates[kind] = images / spent
    return seconds, rates


def speed(mnist: str, epochs: int, repeats: int) -> list[dict[str, Any]]:
    rows = []
    for rules in [[rule] for rule in RULES] + [RULES]:
        experiment = prepare(config(mnist, rules, epochs * repeats + 1))
        case, simulation = experiment.case, experiment.simulation
        state = simulation.run(rounds=1)  # warm-up
        scored = sum(rule == "loss" for rule in rules)
        setup = plain_setup()
        before = load_average()
        seconds, floors, works, rates, first = [], [], [], [], 1
        for _ in range(repeats):  # byzmtl's epochs and the plain CNN's runs, interleaved
            rounds = range(first, first + epochs * case.rounds_per_epoch)
            work = workload(case, len(rules), scored, experiment.graph.n_edges, rounds)
            started = time.perf_counter()
            state = simulation.run(state, rounds=len(rounds))
            seconds.append((time.perf_counter() - started) / epochs)
            floor, rate = plain_floor(setup, work)
            floors.append(floor / epochs)
            works.append(work)
            rates.append(rate)
            first = rounds.stop
        ratios = [t / f for t, f in zip(seconds, floors, strict=True)]
        row = {
            "rules": rules,
            "seconds_per_epoch": seconds,
            "floor_seconds_per_epoch": floors,
            "ratios": ratios,
            "ratio": statistics.median(ratios),
            "images": works,
            "plain_rates": rates,
            "plain_config": {kind: setup[kind]["config"] for kind in setup},
            "load_before": before,
            "load_after": load_average(),
        }
        print(json.dumps({k: row[k] for k in ("rules", "seconds_per_epoch", "ratios")}))
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


def _synthetic_cached(settings: dict[str, Any]) -> bool:
    """Whether the rendered synthetic digits of a digits [task] table are in byzmtl's cache."""
    from byzmtl.datasets.synthetic_digits import RENDERER_VERSION

    n_train, n_test = 5 * settings["train_per_agent"], 5 * settings["test_per_agent"]
    name = (
        f"synthetic_digits_v{RENDERER_VERSION}_seed{settings['synthetic_seed']}"
        f"_train{n_train}_test{n_test}.npz"
    )
    folder = Path(os.environ.get("BYZMTL_CACHE") or Path.home() / ".cache" / "byzmtl")
    return (folder / name).is_file()


def demo_run(mnist: str, seed: int, attacked: bool, threads: int) -> dict[str, Any]:
    """One whole ``byzmtl run --config configs/digits-demo.toml`` process and what it reached."""
    from byzmtl.config import read_toml

    settings = read_toml(DEMO)["task"]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        command = [sys.executable, "-m", "byzmtl", "run", "--config", str(DEMO)]
        command += ["--data-dir", mnist, "--seed", str(seed), "--threads", str(threads)]
        command += ["--out", str(out), "--no-progress", "--quiet"]
        if not attacked:
            command += ["--attackers", "0"]
        cached, before = _synthetic_cached(settings), load_average()
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(command, check=True)
        wall = time.perf_counter() - started
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        summary = json.loads((out / "summary.json").read_text())
    final = {
        group: {
            rule: {s: v["groups"][group]["final"]["accuracy"][s] for s in ("mean", "min", "max")}
            for rule, v in summary["rules"].items()
        }
        for group in summary["groups"]
    }
    row = {
        "seed": seed,
        "attacked": attacked,
        "byzantine": summary["byzantine"],
        "command": " ".join(command[2:]),
        "whole_process_seconds": wall,
        "cpu_seconds": (used.ru_utime - cpu.ru_utime) + (used.ru_stime - cpu.ru_stime),
        "compute_seconds": summary["compute_seconds"],
        "synthetic_cached_before": cached,
        "load_before": before,
        "load_after": load_average(),
        "final_accuracy": final,
    }
    mnist_means = {rule: round(100 * r["mean"], 1) for rule, r in final["mnist"].items()}
    print(f"seed {seed} attacked {attacked}: {wall:.0f} s, load {before:.1f}, MNIST {mnist_means}")
    return row


def demo(mnist: str, seeds: list[int], threads: int, out: Path) -> list[dict[str, Any]]:
    """``configs/digits-demo.toml`` for every seed, with and without attack, one at a time;
    ``out`` is rewritten after every run, so that a stopped benchmark keeps what it measured."""
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        for attacked in (True, False):
            rows.append(demo_run(mnist, seed, attacked, threads))
            save(out, "demo", threads, rows)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["speed", "batching", "accuracy", "demo"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per rule (speed)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="(demo)")
    parser.add_argument("--mnist", default=str(MNIST))
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.mode == "speed":
        result: Any = speed(args.mnist, args.epochs or 1, args.repeats)
    elif args.mode == "batching":
        result = batching()
    elif args.mode == "demo":
        args.out = args.out or DEMO_OUT
        result = demo(args.mnist, args.seeds, args.threads, args.out)
    else:
        result = accuracy(args.mnist, args.epochs or 10)
    save(args.out, args.mode, args.threads, result)


if __name__ == "__main__":
    main()
