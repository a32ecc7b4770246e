"""Normal agents stay finite whatever Byzantine senders send: every registered rule, any mix of
NaN, Inf, huge, tiny and denormal coordinates per edge, in both precisions; an honest agent whose
step or combination would not be finite is contained (it keeps its model), counted, reported."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor

import byzmtl
from byzmtl import graph as graphs
from byzmtl.attacks.base import Attack, AttackInputs
from byzmtl.engine import Simulation, keep_finite
from byzmtl.rules import RULES
from byzmtl.rules.base import Combination, Rule, RuleInputs, RuleState
from byzmtl.tasks.target_localization import TargetLocalization, TargetLocalizationSettings


def special_values(dtype: torch.dtype) -> list[float]:
    info = torch.finfo(dtype)
    return [
        float("nan"),
        float("inf"),
        float("-inf"),
        info.max,
        -info.max,
        info.max / 3,
        1e38 if dtype == torch.float32 else 1e300,
        -1e30,
        info.tiny,
        info.tiny / 4,  # denormal
        -info.tiny / 4,
        0.0,
        1e-30,
        15.0,
    ]


@dataclass
class Fuzzed(Attack):
    """Sends, on every attacked edge and coordinate, a value picked from ``pool`` by ``choice``
    (one index per round, edge and coordinate, cycled)."""

    pool: tuple[float, ...] = ()
    choice: tuple[int, ...] = (0,)
    trains: bool = True
    name = "fuzzed"

    def messages(self, x: AttackInputs) -> Tensor:
        shape = (x.psi.shape[0], len(x.senders), x.psi.shape[2])
        size = int(np.prod(shape))
        picks = np.resize(np.asarray(self.choice), size + x.iteration)[x.iteration :]
        values = np.asarray(self.pool, dtype=np.float64)[picks].reshape(shape)
        return torch.as_tensor(values).to(x.psi.dtype)


def small_case(agents: int, dtype: torch.dtype) -> TargetLocalization:
    settings = TargetLocalizationSettings(agents=agents, iterations=6)
    return TargetLocalization.from_settings(settings, 0, dtype)


def rule_for(name: str, degree: int) -> object:
    """The rule ``name`` with tolerances its smallest neighbourhood (``degree``) satisfies."""
    params = RULES.parameters(name)
    chosen = {}
    if "f" in params:
        chosen["f"] = max(0, min(1, (degree - 3) // 2))
    if "b" in params:
        chosen["b"] = max(0, min(1, (degree - 1) // 2 - 1))
    return RULES.create(name, chosen)


@settings(
    deadline=None, max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    dtype=st.sampled_from([torch.float32, torch.float64]),
    dense=st.booleans(),
    byzantine=st.sets(st.integers(0, 7), min_size=1, max_size=5),
    choice=st.lists(st.integers(0, 13), min_size=1, max_size=40),
)
def test_every_rule_keeps_normal_agents_finite_under_any_message(
    dtype: torch.dtype, dense: bool, byzantine: set[int], choice: list[int]
) -> None:
    case = small_case(8, dtype)
    graph = graphs.complete(8) if dense else graphs.ring(8, 2)
    degree = int(graph.degrees.min())
    rules = [rule_for(name, degree) for name in RULES.names()]
    attack = Fuzzed(tuple(special_values(dtype)), tuple(choice))
    simulation = Simulation(case, graph, rules, attack, sorted(byzantine), 0, case.keys, dtype)
    normal = np.setdiff1d(np.arange(8), sorted(byzantine))
    checked = []

    def check(state: object, output: object) -> None:
        checked.append(bool(torch.isfinite(state.models[:, normal]).all()))  # type: ignore[attr-defined]

    simulation.run(on_round=check)
    assert checked and all(checked)


@dataclass
class Exploding(Rule):
    """A broken aggregator: agents 0 and 1 get NaN models from round 2 on."""

    name = "exploding"

    def step(self, x: RuleInputs, state: RuleState) -> tuple[Combination, RuleState]:
        models = x.psi.clone()
        if x.iteration >= 2:
            models[:2] = torch.nan
        return Combination(models, None), state


def test_a_combination_that_is_not_finite_is_contained_counted_and_not_spread() -> None:
    case = small_case(12, torch.float64)
    graph = graphs.complete(12)
    simulation = Simulation(case, graph, [Exploding(), RULES.create("average")], None, [], 0)
    state = simulation.run()
    assert torch.isfinite(state.models).all()
    assert state.contained is not None
    # agents 0 and 1 in rounds 2..5 of the broken rule; nothing for the average
    assert state.contained.tolist() == [[0, 8], [0, 0]]


def test_a_local_step_that_diverges_is_rejected_and_reported_in_the_summary() -> None:
    from byzmtl.attacks import ATTACKS
    from byzmtl.experiment import prepare, run

    experiment = prepare(
        {
            "case": "target-localization",
            "rules": ["average", "none"],
            "task": {"agents": 20, "iterations": 5},
        }
    )
    task = experiment.simulation.task
    original = task.adapt

    def diverging(models, batch, state, iteration):  # agent 0's step overflows in round 3
        psi, state = original(models, batch, state, iteration)
        if iteration == 3:
            psi = psi.clone()
            psi[:, 0, 0] = torch.inf
        return psi, state

    task.adapt = diverging  # type: ignore[method-assign]
    assert ATTACKS.names()  # the registry is loaded
    result = run(experiment)
    for rule in ("average", "none"):
        assert result.summary["rules"][rule]["contained"] == {
            "local_steps": 1,
            "combinations": 0,
        }
    assert np.isfinite(result.state.models.numpy()).all()


def test_keep_finite_replaces_exactly_the_rows_with_a_nan_or_inf() -> None:
    values = torch.tensor([[[1.0, 2.0], [3e38, 3e38], [float("nan"), 0.0], [0.0, float("-inf")]]])
    fallback = torch.zeros_like(values)
    kept, bad = keep_finite(values, fallback)
    assert bad is not None and bad.tolist() == [[False, False, True, True]]
    assert torch.equal(kept[0, :2], values[0, :2])  # a sum that overflows is not a NaN
    assert torch.equal(kept[0, 2:], fallback[0, 2:])
    assert keep_finite(values[:, :2], fallback[:, :2])[1] is None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_reviewers_geometric_median_and_distance_runs_stay_finite(dtype: str) -> None:
    huge = 1e31 if dtype == "float32" else 1e301
    runs = [
        {"rules": ["geometric-median"], "attackers": 25, "attack": "constant",
         "attack_params": {"value": huge, "spread": 0.0}},
        {"rules": ["distance", "none"], "attackers": 15, "attack": "ipm", "nu": 0.99,
         "attack_params": {"epsilon": 1e-300 if dtype == "float64" else 1e-38}},
    ]  # fmt: skip
    for extra in runs:
        result = byzmtl.run(
            {"case": "target-localization", "dtype": dtype,
             "task": {"agents": 50, "iterations": 30}, **extra}
        )  # fmt: skip
        normal = result.experiment.normal
        assert torch.isfinite(result.state.models[:, normal]).all(), extra
