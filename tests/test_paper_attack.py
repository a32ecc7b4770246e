"""The authors' scaled-model attack (``paper-scaled``) and the mechanism it rests on: an attack
may set the Byzantine agents' own next models (``Attack.own_models``)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from byzmtl import graph as graphs
from byzmtl.attacks import ATTACKS
from byzmtl.attacks.base import Attack, AttackInputs
from byzmtl.engine import AttackOutputError, Simulation
from byzmtl.rules import RULES
from byzmtl.tasks.neural import SGD, NeuralCase
from tests.test_neural_engine import Case, agents_data

BYZANTINE = [1, 3]


def learning_case(rounds_per_epoch_batches: int = 4) -> NeuralCase:
    torch.manual_seed(0)
    return Case(
        nn.Linear(6, 3),  # two parameter tensors: weight (18) and bias (3)
        agents_data((6,), [12] * 6),
        seed=0,
        optimiser=SGD(0.5),
        epochs=2,
        batch_size=rounds_per_epoch_batches,
        dtype=torch.float64,
    )


def spy(name: str, **params: object) -> tuple[Attack, list[Tensor]]:
    """The registered attack ``name`` recording every round's messages (R, B, d), edge by edge,
    whether it gives them per edge or broadcasts them."""
    seen: list[Tensor] = []

    class Spy(ATTACKS.get(name)):  # type: ignore[misc]
        def messages(self, x: AttackInputs) -> Tensor:
            out = super().messages(x)
            seen.append(out.clone())
            return out

        def broadcast(self, x: AttackInputs) -> Tensor | None:
            out = super().broadcast(x)
            if out is not None:
                seen.append(out.index_select(1, x.context.sender_rank))
            return out

    Spy.name = name
    return Spy(**params), seen


@pytest.mark.parametrize("trains", [True, False])
def test_the_attacker_keeps_what_it_sent_and_shrinks_geometrically(trains: bool) -> None:
    case = learning_case()
    attack, seen = spy("paper-scaled", scale=0.1, trains=trains)
    rules = [RULES.create("loss", {"nu": 0.1, "r0": 1.0}), RULES.create("none")]
    simulation = Simulation(case, graphs.complete(6), rules, attack, BYZANTINE, 0, case.keys)
    state = simulation.init_state()
    context = simulation.attack_context
    senders = simulation.edges.senders[simulation.attack_edges]
    norms = []
    for _ in range(case.n_rounds):
        state, _ = simulation.step(state)
        sent = seen[-1]  # (R, B, d)
        for b in BYZANTINE:
            mine = sent[:, senders == b]
            # the same message to every receiver, and the attacker's model is that message
            assert torch.equal(mine, mine[:, :1].expand_as(mine))
            assert torch.equal(state.models[:, b], mine[:, 0])
        norms.append(float(state.models[:, BYZANTINE].norm()))
        assert context.byzantine_ids.tolist() == BYZANTINE
    if not trains:  # a factor below 0.1 each round: at least 10x smaller per round
        assert all(b < 0.1 * a for a, b in itertools.pairwise(norms))


def test_one_factor_per_parameter_tensor_and_round() -> None:
    case = learning_case()
    assert case.parameter_sizes == (18, 3)
    attack, seen = spy("paper-scaled", scale=0.1, trains=False)
    rules = [RULES.create("none")]
    simulation = Simulation(case, graphs.complete(6), rules, attack, BYZANTINE, 0, case.keys)
    state = simulation.init_state()
    before = state.models.clone()
    state, _ = simulation.step(state)
    for b in BYZANTINE:
        ratio = state.models[0, b] / before[0, b]
        weight, bias = ratio[:18], ratio[18:]
        for part in (weight, bias):  # one factor per tensor, in [0, 0.1)
            assert torch.allclose(part, part[:1].expand_as(part), rtol=1e-12, atol=0)
            assert 0 <= float(part[0]) < 0.1
        assert not torch.isclose(weight[0], bias[0])  # distinct draws per tensor
    sent = seen[0]
    assert sent.shape == (1, len(simulation.attack_edges), case.n_parameters)


def test_the_factors_differ_between_attackers_and_rounds_and_follow_the_seed() -> None:
    def factors(seed: int) -> np.ndarray:
        case = learning_case()
        rules = [RULES.create("none")]
        attack = ATTACKS.create("paper-scaled", {"trains": False})
        simulation = Simulation(case, graphs.complete(6), rules, attack, BYZANTINE, seed)
        state = simulation.init_state()
        start = state.models[0, BYZANTINE, 0].clone()
        out = []
        for _ in range(2):
            new, _ = simulation.step(state)
            out.append((new.models[0, BYZANTINE, 0] / state.models[0, BYZANTINE, 0]).numpy())
            state = new
        assert torch.all(start != 0)
        return np.array(out)

    first = factors(0)
    assert len(np.unique(first.round(12))) == 4  # 2 attackers x 2 rounds
    assert np.array_equal(first, factors(0))
    assert not np.array_equal(first, factors(1))


def test_an_attack_may_set_its_own_models_but_not_a_non_finite_one() -> None:
    class Teleport(Attack):
        """Sends its model and sets it to 7 (row of attacker 1) and NaN (row of attacker 3)."""

        name = "teleport"
        trains = True

        def messages(self, x: AttackInputs) -> Tensor:
            return x.psi.index_select(1, x.senders)

        def own_models(self, x: AttackInputs, sent: Tensor) -> Tensor:
            own = torch.full((x.psi.shape[0], 2, x.psi.shape[2]), 7.0, dtype=x.psi.dtype)
            own[:, 1] = torch.nan
            return own

    case = learning_case()
    rules = [RULES.create("none")]
    simulation = Simulation(case, graphs.complete(6), rules, Teleport(), BYZANTINE, 0)
    state, _ = simulation.step(simulation.init_state())
    assert torch.all(state.models[:, 1] == 7.0)
    assert torch.isfinite(state.models).all()  # attacker 3 keeps its local step instead


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        (
            lambda x: x.psi[:, :2],
            r"\(R, B, d\) = \(1, 6, 21\) and dtype torch.float64 \(or a narrower float\), "
            r"got a torch.float64 tensor of",
        ),
        (lambda x: x.psi.index_select(1, x.senders).long(), r"got a torch.int64 tensor"),
        (lambda x: [0.0], r"got list"),
        (lambda x: x.psi.index_select(1, x.senders) > 0, r"got a torch.bool tensor"),
    ],
)
def test_an_attack_returning_the_wrong_thing_is_named_with_the_expected_shape(
    returned, expected
) -> None:
    class Broken(Attack):
        name = "broken"
        trains = True

        def messages(self, x: AttackInputs) -> Tensor:
            return returned(x)

    case = learning_case()
    simulation = Simulation(case, graphs.complete(6), [RULES.create("none")], Broken(), [1], 0)
    with pytest.raises(
        AttackOutputError, match=r"attack broken.messages must return .*" + expected
    ):
        simulation.step(simulation.init_state())


@pytest.mark.parametrize("scale", [0.0, -1.0, float("inf"), float("nan")])
def test_scales_must_be_positive_and_finite(scale: float) -> None:
    for name in ("scaled", "paper-scaled"):
        with pytest.raises(ValueError, match=r"scale(=| must be positive and finite)"):
            ATTACKS.create(name, {"scale": scale})


def test_broadcast_messages_give_the_results_of_the_same_messages_edge_by_edge() -> None:
    class EdgeByEdge(ATTACKS.get("paper-scaled")):  # type: ignore[misc]
        def broadcast(self, x: AttackInputs) -> None:
            return None

        def messages(self, x: AttackInputs) -> Tensor:
            return super().broadcast(x).index_select(1, x.context.sender_rank)

        def own_models(self, x: AttackInputs, sent: Tensor) -> Tensor:
            return super().broadcast(x)

    def final(attack: Attack) -> Tensor:
        case = learning_case()
        rules = [RULES.create(n, {"nu": 0.1, "r0": 1.0}) for n in ("loss", "distance")]
        rules += [RULES.create(n) for n in ("average", "median")]
        simulation = Simulation(case, graphs.complete(6), rules, attack, BYZANTINE, 0)
        return simulation.run().models

    params = {"scale": 0.1, "trains": True}
    broadcast = final(ATTACKS.create("paper-scaled", params))
    EdgeByEdge.name = "paper-scaled"
    torch.testing.assert_close(broadcast, final(EdgeByEdge(**params)), rtol=1e-10, atol=1e-12)
