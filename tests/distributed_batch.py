"""One rank of a batch of runs in one process group (started by tests/test_distributed.py).

    python tests/distributed_batch.py BATCH.json OUT   # with RANK, WORLD_SIZE, MASTER_* set

``BATCH.json`` maps a name to a run configuration; every run is made with ``procs`` set to the
group's size, and rank 0 writes its tables (config.toml, metrics.csv, diagnostics.csv,
summary.json) to ``OUT/<name>`` and the name of the engine that ran it and of the graph
it held (``Graph``, or its part's ``PartOutline``) to ``engine.txt``; every rank writes the
run's final state (the whole network's, as every rank's ``Result`` holds it) to
``OUT/<name>-state-<rank>.pt``; for a run of one rule (where no per-edge array of a rank's can
have the whole graph's number of edges by chance) it writes the arrays it held after the first
round with a dimension of the whole graph's number of edges to ``OUT/<name>-whole-<rank>.txt``
(a rank that holds its own agents holds none). One torch thread, as in the test suite.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from byzmtl import distributed
from byzmtl.engine import SimState
from byzmtl.experiment import Experiment, prepare, run
from byzmtl.outcome import Result
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


def whole_edge_arrays(n_edges: int) -> list[str]:
    """Every array or tensor held (found through the objects the garbage collector tracks)
    with a dimension of ``n_edges``, as "holder type: shape" (garbage collected first: an
    earlier run's objects are not this run's)."""
    gc.collect()
    found = []
    for holder in gc.get_objects():
        for value in gc.get_referents(holder):
            if isinstance(value, (np.ndarray, torch.Tensor)) and n_edges in value.shape:
                found.append(f"{type(holder).__name__}: {tuple(value.shape)}")
    return sorted(set(found))


def run_looking(experiment: Experiment) -> tuple[Result, list[str]]:
    """The run's result, and what :func:`whole_edge_arrays` finds after its first round."""
    held: list[str] = []

    def after_round(state: Any, output: Any) -> None:
        if state.iteration == 1:
            held.extend(whole_edge_arrays(experiment.graph.n_edges))

    return run(experiment, on_round=after_round), held


def run_one(name: str, config: dict[str, Any], rank: int, world: int, out: Path) -> None:
    """One run of the batch and what it writes (a function, so that nothing of a run outlives
    it: the next run's search for whole-graph arrays finds its own only)."""
    experiment = prepare({**config, "procs": world})
    if len(experiment.rules) > 1:  # the search (0.5 s a run) only where it means something
        result, held = run(experiment), None
    else:
        result, held = run_looking(experiment)
    if rank == 0:
        folder = out / name
        folder.mkdir(parents=True)
        _write_tables(result, folder)
        engine = type(result.experiment.simulation).__name__
        graph = type(result.experiment.graph).__name__
        (folder / "engine.txt").write_text(f"{engine} {graph}")
    out.mkdir(parents=True, exist_ok=True)
    whole = result.experiment.simulation.whole_state(result.state)  # a rank's part: joined
    torch.save(state_tensors(whole), out / f"{name}-state-{rank}.pt")
    if held is not None:
        (out / f"{name}-whole-{rank}.txt").write_text("\n".join(held))


def main(batch: Path, out: Path) -> None:
    torch.set_num_threads(1)
    place = distributed.environment()
    assert place is not None, "start it with the group's variables set"
    distributed.join(place, "cpu")
    try:
        for name, config in json.loads(batch.read_text()).items():
            run_one(name, config, place.rank, place.world, out)
    finally:
        distributed.leave()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
