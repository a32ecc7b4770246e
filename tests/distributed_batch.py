"""One rank of a batch of runs in one process group (started by tests/test_distributed.py).

    python tests/distributed_batch.py BATCH.json OUT   # with RANK, WORLD_SIZE, MASTER_* set

``BATCH.json`` maps a name to a run configuration; every run is made with ``procs`` set to the
group's size, and rank 0 writes its tables (config.toml, metrics.csv, diagnostics.csv,
summary.json) to ``OUT/<name>`` and the name of the engine that ran it and of the graph
it held (``Graph``, or its part's ``PartOutline``) to ``engine.txt``; every rank writes the
run's final state (the whole network's, as every rank's ``Result`` holds it) to
``OUT/<name>-state-<rank>.pt``. One torch thread, as in the test suite.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from byzmtl import distributed
from byzmtl.engine import SimState
from byzmtl.experiment import prepare, run
from byzmtl.results import _write_tables


def state_tensors(state: SimState) -> dict[str, torch.Tensor]:
    """Every tensor of a run's final state, by name."""
    tensors = {"models": state.models}
    for r, rule_state in enumerate(state.rule_states):
        tensors.update({f"rule{r}.edges.{k}": v for k, v in rule_state.edges.items()})
        tensors.update({f"rule{r}.agents.{k}": v for k, v in rule_state.agents.items()})
    tensors.update({f"task.{k}": v for k, v in state.task_state.items()})
    if state.contained is not None:
        tensors["contained"] = state.contained
    return {name: value.cpu() for name, value in tensors.items()}


def main(batch: Path, out: Path) -> None:
    torch.set_num_threads(1)
    place = distributed.environment()
    assert place is not None, "start it with the group's variables set"
    distributed.join(place, "cpu")
    try:
        for name, config in json.loads(batch.read_text()).items():
            result = run(prepare({**config, "procs": place.world}))
            if place.rank == 0:
                folder = out / name
                folder.mkdir(parents=True)
                _write_tables(result, folder)
                engine = type(result.experiment.simulation).__name__
                graph = type(result.experiment.graph).__name__
                (folder / "engine.txt").write_text(f"{engine} {graph}")
            out.mkdir(parents=True, exist_ok=True)
            torch.save(state_tensors(result.state), out / f"{name}-state-{place.rank}.pt")
    finally:
        distributed.leave()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
