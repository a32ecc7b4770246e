"""The wider attacks: their definitions on small inputs, the label-flip hook, and the adaptive
attacks' defining property: their messages pass the loss filter in the round they are sent."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from byzmtl import graph as graphs
from byzmtl import rng
from byzmtl.attacks import ATTACKS, AttackAssumptionError
from byzmtl.attacks.base import one_round
from byzmtl.config import ConfigError
from byzmtl.engine import Simulation
from byzmtl.experiment import prepare, run
from byzmtl.neighbourhoods import Neighbourhoods
from byzmtl.rules import RULES
from byzmtl.tasks.target_localization import TargetLocalization, TargetLocalizationSettings

F64 = torch.float64


@pytest.fixture(scope="module")
def small() -> tuple[Neighbourhoods, torch.Tensor, list[int]]:
    """A directed 6-agent graph, random models, attackers 1 and 4."""
    generator = np.random.default_rng(3)
    pairs = [(k, l) for k in range(6) for l in range(6) if k != l and generator.random() < 0.6]
    graph = graphs.from_edges(6, np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]))
    psi = torch.tensor(generator.normal(size=(6, 3)), dtype=F64)
    return Neighbourhoods.from_graph(graph), psi, [1, 4]


def attacked(edges: Neighbourhoods, byzantine: list[int]) -> list[tuple[int, int]]:
    """(receiver, sender) of the attacked edges, in edge order."""
    pairs = zip(edges.receivers.tolist(), edges.senders.tolist(), strict=True)
    return [(k, b) for k, b in pairs if b in byzantine]


def honest_of(edges: Neighbourhoods, k: int, byzantine: list[int]) -> list[int]:
    return [
        int(s)
        for r, s in zip(edges.receivers, edges.senders, strict=True)
        if int(r) == k and int(s) not in byzantine
    ]


def test_sign_flip_gaussian_and_mimic(small) -> None:
    edges, psi, byzantine = small
    pairs = attacked(edges, byzantine)
    flipped = one_round(ATTACKS.create("sign-flip", {"scale": 2.0}), edges, psi, byzantine)
    expected = torch.stack([-2.0 * psi[b] for _, b in pairs])
    torch.testing.assert_close(flipped, expected)

    sent = one_round(
        ATTACKS.create("gaussian", {"sigma": 0.5}), edges, psi, byzantine, seed=7, iteration=3
    )
    for row, (k, b) in enumerate(pairs):
        key = rng.pair_keys(np.array([b], np.uint64), np.array([k], np.uint64))
        noise = rng.normal(7, "attack-gaussian", key, 3, 3)[0]
        np.testing.assert_allclose(sent[row].numpy(), psi[b].numpy() + 0.5 * noise)

    copied = one_round(ATTACKS.create("mimic"), edges, psi, byzantine)
    assert torch.equal(copied, psi[0].expand(len(pairs), -1))  # lowest-id honest agent
    copied = one_round(ATTACKS.create("mimic", {"agent": 5}), edges, psi, byzantine)
    assert torch.equal(copied, psi[5].expand(len(pairs), -1))


def test_alie_matches_the_published_recipe(small) -> None:
    edges, psi, byzantine = small
    sent = one_round(ATTACKS.create("alie"), edges, psi, byzantine)
    for row, (k, _) in enumerate(attacked(edges, byzantine)):
        honest = psi[honest_of(edges, k, byzantine)].numpy()
        n = int(edges.degrees[k])
        f = n - len(honest)
        supporters = max(math.floor(n / 2 + 1) - f, 1)
        z = norm.ppf((n - supporters) / n)
        spread = honest.std(0, ddof=1) if len(honest) > 1 else 0.0
        np.testing.assert_allclose(sent[row].numpy(), honest.mean(0) - z * spread, rtol=1e-10)
    fixed = one_round(ATTACKS.create("alie", {"z": 1.5}), edges, psi, byzantine)
    k = attacked(edges, byzantine)[0][0]
    honest = psi[honest_of(edges, k, byzantine)].numpy()
    np.testing.assert_allclose(fixed[0].numpy(), honest.mean(0) - 1.5 * honest.std(0, ddof=1))


def test_ipm_reverses_the_honest_update(small) -> None:
    edges, psi, byzantine = small
    before = psi - 0.1
    sent = one_round(ATTACKS.create("ipm", {"epsilon": 2.0}), edges, psi, byzantine, before)
    for row, (k, _) in enumerate(attacked(edges, byzantine)):
        mean = psi[honest_of(edges, k, byzantine)].mean(0)
        torch.testing.assert_close(sent[row], before[k] - 2.0 * (mean - before[k]))


def test_dissensus_reverses_the_neighbours_pull_under_averaging(small) -> None:
    edges, psi, byzantine = small
    epsilon = 1.5
    sent = one_round(ATTACKS.create("dissensus", {"epsilon": epsilon}), edges, psi, byzantine)
    messages = psi[edges.senders].clone()
    is_attacked = torch.isin(edges.senders, torch.tensor(byzantine))
    messages[is_attacked] = sent
    averaged = edges.combine(
        edges.normalise(torch.ones(1, edges.n_edges, dtype=F64)), messages[None]
    )[0]
    for k in range(6):
        honest = honest_of(edges, k, byzantine)
        if k in byzantine or len(honest) == int(edges.degrees[k]):
            continue
        pull = (psi[honest] - psi[k]).sum(0)
        expected = psi[k] + (1 - epsilon) / int(edges.degrees[k]) * pull
        torch.testing.assert_close(averaged[k], expected)


def test_label_flip_mirrors_the_targets_through_the_positions() -> None:
    task = TargetLocalization.from_settings(TargetLocalizationSettings(agents=8, iterations=5), 1)
    batch = task.batch(0)
    agents = torch.tensor([True, False] * 4)
    flipped = task.flip_labels(batch, agents)
    x = torch.as_tensor(task.positions)
    torch.testing.assert_close(flipped.q[agents], 2 * x[agents] - batch.q[agents])
    assert torch.equal(flipped.q[~agents], batch.q[~agents])
    assert torch.equal(flipped.b[~agents], batch.b[~agents])
    d = batch.b - (batch.u * x).sum(1)  # the observation, d = b - u^T x
    torch.testing.assert_close(flipped.b[agents], -d[agents] + (batch.u * x).sum(1)[agents])


def test_label_flip_attackers_learn_the_mirrored_target() -> None:
    config = {
        "case": "target-localization",
        "attackers": 20,
        "rules": ["none"],
        "task": {"iterations": 150},
    }
    poisoned = run(config | {"attack": "label-flip"})
    clean = run(config | {"attack": "constant"})
    experiment = poisoned.experiment
    byzantine, case = experiment.byzantine, experiment.case
    mirrored = 2 * case.positions[byzantine] - case.goal[byzantine]
    models = poisoned.state.models[0, byzantine].numpy()
    to_mirror = np.linalg.norm(models - mirrored, axis=1)
    to_goal = np.linalg.norm(models - case.goal[byzantine], axis=1)
    assert np.median(to_mirror) < 0.3 and np.all(to_mirror < 0.2 * to_goal)
    normal = experiment.normal  # under no cooperation normal agents do not see the attack
    assert torch.equal(poisoned.state.models[0, normal], clean.state.models[0, normal])


def test_label_flip_needs_the_task_hook() -> None:
    class Regression:
        name = "no-hook"

    with pytest.raises(AttackAssumptionError, match="'no-hook' does not"):
        ATTACKS.create("label-flip").check(None, Regression())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"attack: null-space probes .* d=2 .*max_dimension=1"):
        prepare(
            {
                "case": "target-localization",
                "attackers": 5,
                "attack": "null-space",
                "attack_params": {"max_dimension": 1},
            }
        )
    with pytest.raises(ConfigError, match="attack: mimic: agent 0 is Byzantine"):
        prepare(
            {
                "case": "target-localization",
                "byzantine": [0, 1],
                "attack": "mimic",
                "attack_params": {"agent": 0},
            }
        )


@pytest.mark.parametrize(
    ("attack", "params", "passes"),
    [("adaptive", {}, True), ("null-space", {"push": 5.0}, True), ("constant", {}, False)],
)
def test_adaptive_messages_pass_the_loss_filter_when_sent(attack, params, passes) -> None:
    task = TargetLocalization.from_settings(TargetLocalizationSettings(iterations=60), 0)
    graph = graphs.geometric(task.positions, 1.0, 10, seed=0, keys=task.keys)
    byzantine = graphs.choose_byzantine(100, 20, 0, task.keys)
    rules = [RULES.create("loss"), RULES.create("loss", {"nu": 0.5, "r0": 1.0})]
    sim = Simulation(task, graph, rules, ATTACKS.create(attack, params), byzantine, 0, task.keys)
    to_normal = ~sim.byzantine[sim.edges.receivers[sim.attack_edges]]
    edges = sim.attack_edges[to_normal]
    kept = []

    def check(state, output) -> None:
        kept.extend(bool((weights[edges] > 0).all()) for weights in output.weights)

    sim.run(on_round=check)
    assert len(kept) == 120 and all(kept) == passes  # the constant attack is a control


def test_null_space_message_keeps_the_receivers_loss_and_moves_by_push() -> None:
    task = TargetLocalization.from_settings(TargetLocalizationSettings(agents=30, iterations=3), 4)
    graph = graphs.complete(30)
    edges = Neighbourhoods.from_graph(graph)
    batch = task.batch(2)
    psi = task.init_models(1)[0] + 5.0

    def loss_of(candidates: torch.Tensor) -> torch.Tensor:
        return task.edge_losses(candidates, receivers, batch)

    flags = torch.isin(edges.senders, torch.tensor([3, 7]))
    receivers = edges.receivers[flags]
    sent = one_round(
        ATTACKS.create("null-space", {"push": 2.0, "margin": 1e-3}),
        edges,
        psi,
        [3, 7],
        loss_of=loss_of,
    )
    own = psi[receivers]
    own_loss = loss_of(own[None])[0]
    sent_loss = loss_of(sent[None])[0]
    torch.testing.assert_close(sent_loss, (1 - 5e-4) ** 2 * own_loss)
    moved = (sent - own).norm(dim=1)
    assert torch.all((moved - 2.0).abs() < 1e-2)
