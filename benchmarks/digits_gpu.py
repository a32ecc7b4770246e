"""Digit classification, the paper's full run on one GPU: 100 epochs, the four rules, without and
with attackers (agents 2 and 7), as one script meant to finish within 10 minutes on one H200.

    python benchmarks/digits_gpu.py --mnist PATH/TO/mnist --out runs/digits-gpu [--epochs 100]

Writes one results folder per attack setting (``<out>/attackers-0``, ``<out>/attackers-2``: the
usual config.toml, metrics.csv, summary.json, figure.png) and ``<out>/timing.json`` (seconds per
epoch, device name), and prints the final accuracy per rule and group next to the paper's.

Synthetic digits are rendered on the CPU first (about 15 s, cached in $BYZMTL_CACHE). Everything
else runs on the device: models, batches and metrics stay in GPU memory; the activation budget
for CUDA lets a round's scores of all 100 edges run in one batched call per batch size.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import byzmtl
from byzmtl.datasets import load_synthetic_digits

RULES = ["loss", "distance", "average", "none"]
PAPER = {  # final test accuracy read off the paper's figures (epoch 100)
    ("mnist", 0): "about 95-96% for every rule",
    ("mnist", 2): "loss about 96%, distance about 92%, average 10%",
    ("synthetic", 0): "loss 86-87%, none 74-76%, average about 61%",
    ("synthetic", 2): "loss 86-87%, none 74-76%, average 10%",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", required=True, help="folder of the four MNIST IDX files")
    parser.add_argument("--out", type=Path, default=Path("runs/digits-gpu"))
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this script is for the GPU machine")
    started = time.perf_counter()
    load_synthetic_digits(5 * 2000, 5 * 400)  # render (or read) the cache once, on the CPU
    timing: dict = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
        "render_seconds": time.perf_counter() - started,
        "epochs": args.epochs,
        "runs": {},
    }
    for attackers in (0, 2):
        config = {
            "case": "digits",
            "rules": RULES,
            "attackers": attackers,
            "seed": 0,
            "device": args.device,
            "task": {"data_dir": args.mnist, "epochs": args.epochs},
        }
        result = byzmtl.run(config, progress=True)
        result.save(args.out / f"attackers-{attackers}", overwrite=True)
        seconds = result.summary["compute_seconds"]
        timing["runs"][attackers] = {
            "compute_seconds": seconds,
            "seconds_per_epoch": seconds / args.epochs,
            "wall_seconds": result.summary["wall_seconds"],
        }
        print(f"{attackers} attackers: {seconds:.1f} s ({seconds / args.epochs:.3f} s per epoch)")
        for group in ("mnist", "synthetic"):
            cells = ", ".join(
                f"{rule} {100 * result.final(rule, 'accuracy', group=group):.1f}%" for rule in RULES
            )
            print(f"  {group:9s} {cells}   (paper: {PAPER[group, attackers]})")
    timing["total_seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "timing.json").write_text(json.dumps(timing, indent=1) + "\n")


if __name__ == "__main__":
    main()
