"""What a checkpoint costs: seconds per checkpoint and bytes on disk, against the seconds of the
rounds between two checkpoints.

    python benchmarks/checkpoint_cost.py target-localization --threads 1 \
        --out benchmarks/results/checkpoint_cost_tl.json
    python benchmarks/checkpoint_cost.py digits --threads 1 --mnist DIR \
        --out benchmarks/results/checkpoint_cost_digits.json

``target-localization``: 100,000 agents, the four default rules, 20 attackers, 20 iterations,
a checkpoint every 5 (after iterations 5, 10, 15). ``digits``: the paper setting (10 agents,
2000 training images each, the four rules), 3 epochs, a checkpoint every epoch (after epochs 1
and 2). Each checkpoint is timed as the run writes it (torch.save into a temporary file, fsync,
rename, the manifest likewise); its bytes are split into the simulation state (models, learner
and rule states), the recorder's and the diagnostics' buffers. ``compute_seconds`` is the run's
engine time without the checkpoints. The load average is recorded before the run.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import load_average, save

from byzmtl.checkpoints import CheckpointFolder, Snapshot
from byzmtl.experiment import run

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def config(case: str, mnist: Path) -> dict[str, Any]:
    if case == "target-localization":
        task: dict[str, Any] = {"agents": 100_000, "iterations": 20}
        return {"case": case, "task": task, "attackers": 20, "checkpoint_every": 5}
    return {"case": case, "task": {"data_dir": str(mnist), "epochs": 3}, "checkpoint_every": 1}


def _bytes(value: Any) -> int:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.tell()


class MeasuredFolder(CheckpointFolder):
    """A checkpoint folder that also records how each checkpoint's bytes split."""

    parts: list[dict[str, int]]

    def write(self, snapshot: Snapshot, rounds: int, config_text: str) -> None:
        super().write(snapshot, rounds, config_text)
        self.parts.append(
            {
                "round": snapshot.state.iteration,
                "state_bytes": _bytes(snapshot.state.as_dict()),
                "recorder_bytes": _bytes(snapshot.recorder),
                "diagnostics_bytes": _bytes(snapshot.diagnostics),
            }
        )


def measure(case: str, mnist: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        checkpoints = MeasuredFolder(Path(folder))
        checkpoints.parts = []
        started = time.perf_counter()
        result = run(config(case, mnist), checkpoints=checkpoints)
        whole = time.perf_counter() - started
    rounds = result.experiment.case.n_rounds
    period = rounds // (len(checkpoints.timings) + 1)
    per_round = result.summary["compute_seconds"] / rounds
    return {
        "case": case,
        "agents": result.summary["agents"],
        "edges": result.summary["edges"],
        "rules": list(result.config.rules),
        "rounds": rounds,
        "rounds_between_checkpoints": period,
        "compute_seconds": result.summary["compute_seconds"],
        "wall_seconds": whole,
        "seconds_of_rounds_between_checkpoints": per_round * period,
        "checkpoints": [
            {"seconds": seconds, "bytes": size, **parts}
            for (seconds, size), parts in zip(checkpoints.timings, checkpoints.parts, strict=True)
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", choices=["target-localization", "digits"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mnist", type=Path, default=MNIST)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = load_average()
    result = {"load_average": load, **measure(args.case, args.mnist)}
    print(json.dumps(result, indent=1))
    save(args.out, args.case, args.threads, result)


if __name__ == "__main__":
    main()
