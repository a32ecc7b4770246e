"""A run saved with ``SimState.save``, loaded with ``SimState.load`` into a freshly built simulation
and continued is the uninterrupted run, bit for bit: every rule, with attackers, in both
precisions, on target localization and on a learning case (Adam moments, less-data schedule,
checkpoint in the middle of an epoch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from byzmtl.engine import RoundOutput, SimState
from byzmtl.experiment import prepare
from byzmtl.rules import RULES

COMPLETE = {"kind": "complete"}


def config_of(case: str, har_sample: Path) -> dict[str, Any]:
    if case == "target-localization":
        task: dict[str, Any] = {"agents": 8, "iterations": 12}
        return {"case": case, "attack": "scaled", "task": task, "graph": COMPLETE}
    task = {"data_dir": str(har_sample), "agents": 8, "epochs": 3, "batch_size": 2}
    return {"case": case, "task": task | {"optimizer": "adam", "lr": 0.01}, "graph": COMPLETE}


def assert_same_state(a: SimState, b: SimState) -> None:
    assert a.iteration == b.iteration
    assert torch.equal(a.models, b.models)
    assert len(a.rule_states) == len(b.rule_states)
    pairs = [(a.task_state, b.task_state)]
    for x, y in zip(a.rule_states, b.rule_states, strict=True):
        pairs += [(x.edges, y.edges), (x.agents, y.agents)]
    for x, y in pairs:
        assert x.keys() == y.keys() and all(torch.equal(x[key], y[key]) for key in x)
    assert (a.contained is None) == (b.contained is None)
    assert a.contained is None or torch.equal(a.contained, b.contained)


def assert_same_output(a: RoundOutput, b: RoundOutput) -> None:
    assert (a.metrics is None) == (b.metrics is None)
    if a.metrics is not None and b.metrics is not None:
        assert a.metrics.keys() == b.metrics.keys()
        assert all(torch.equal(a.metrics[name], b.metrics[name]) for name in a.metrics)
    for x, y in zip(a.weights, b.weights, strict=True):
        assert (x is None) == (y is None) and (x is None or torch.equal(x, y))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", ["target-localization", "har"])
def test_a_saved_and_loaded_run_continues_bit_for_bit(
    case: str, dtype: str, tmp_path: Path, har_sample: Path
) -> None:
    config = config_of(case, har_sample) | {
        "rules": RULES.names(), "attackers": 2, "dtype": dtype, "seed": 3,
    }  # fmt: skip
    straight: list[RoundOutput] = []
    experiment = prepare(config)
    final = experiment.simulation.run(on_round=lambda _, output: straight.append(output))
    per_epoch = getattr(experiment.case, "rounds_per_epoch", 1)
    stop = per_epoch + 1 if per_epoch > 1 else final.iteration // 2  # mid-epoch where there is one
    assert 0 < stop < final.iteration

    prepare(config).simulation.run(rounds=stop).save(tmp_path / "state.pt")
    resumed: list[RoundOutput] = []
    simulation = prepare(config).simulation  # built anew, as by another process
    loaded = SimState.load(tmp_path / "state.pt")
    assert loaded.iteration == stop
    again = simulation.run(loaded, on_round=lambda _, output: resumed.append(output))

    assert_same_state(again, final)
    assert len(resumed) == len(straight) - stop
    for a, b in zip(resumed, straight[stop:], strict=True):
        assert_same_output(a, b)
    assert any(output.metrics is not None for output in resumed)
    # not vacuous: the rules combine differently
    assert len({final.models[r].sum().item() for r in range(len(config["rules"]))}) > 4
