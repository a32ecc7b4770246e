"""The vectorised learning engine (byzmtl.tasks.neural) against a plain per-agent loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from byzmtl import graph as graphs
from byzmtl.attacks import ATTACKS
from byzmtl.engine import RoundOutput, SimState, Simulation
from byzmtl.rules import RULES
from byzmtl.tasks.neural import (
    SGD,
    Adam,
    AgentData,
    LayerwiseForward,
    NeuralCase,
    Schedule,
    VmapForward,
    activation_size,
    batched_forward,
)
from tests.neural_reference import Attack, reference_run

RULE_NAMES = ["loss", "distance", "average", "none"]


class Case(NeuralCase):
    """A learning case built directly from a model and data (no settings)."""

    @classmethod
    def from_settings(cls, settings: object, seed: int, dtype: torch.dtype, device: str) -> Case:
        raise NotImplementedError


class TwoLayer(nn.Module):
    """Not a Sequential: evaluated through torch.func.vmap."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden, self.out = nn.Linear(6, 5), nn.Linear(5, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(torch.tanh(self.hidden(x)))


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(2, 3, 2, stride=1),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(3 * 2 * 2, 3),
    )


def agents_data(shape: tuple[int, ...], n_train: list[int], seed: int = 0) -> list[AgentData]:
    """Per agent: inputs around a class-dependent mean, so that learning makes progress."""
    draw = np.random.default_rng(seed)
    means = draw.normal(size=(3, *shape))
    data = []
    for k, n in enumerate(n_train):
        y_train, y_test = draw.integers(0, 3, n), draw.integers(0, 3, 5 + k)
        data.append(
            AgentData(
                means[y_train] + draw.normal(size=(n, *shape)),
                y_train,
                means[y_test] + draw.normal(size=(5 + k, *shape)),
                y_test,
            )
        )
    return data


def neighbourhoods(graph: graphs.Graph) -> dict[int, list[int]]:
    return {k: graph.senders[graph.receivers == k].tolist() for k in range(graph.n_agents)}


def simulate(
    case: NeuralCase, graph: graphs.Graph, attack: Attack | None, rounds: int
) -> tuple[Tensor, list[dict[str, Tensor]]]:
    rules = [
        RULES.create(name, {"nu": 0.1, "r0": 1.0} if name in ("loss", "distance") else {})
        for name in RULE_NAMES
    ]
    byzantine = sorted(attack.byzantine) if attack else []
    scaled = (
        ATTACKS.create(attack.name, {"scale": attack.scale, "trains": attack.trains})
        if attack
        else None
    )
    simulation = Simulation(case, graph, rules, scaled, byzantine, 0, case.keys, torch.float64)
    records: list[dict[str, Tensor]] = []

    def record(_: object, output: RoundOutput) -> None:
        if output.metrics is not None:
            records.append(output.metrics)

    state = simulation.run(rounds=rounds, on_round=record)
    return state.models, records


def logistic() -> nn.Module:
    return nn.Linear(6, 3)


GRAPHS = {
    # neighbourhoods of different sizes; dense enough (25 pairs <= 2 x 13 edges) that losses
    # and distances are computed for all pairs at once
    "dense": graphs.from_edges(
        5, np.array([0, 0, 1, 2, 2, 2, 3, 4]), np.array([1, 4, 2, 0, 1, 3, 1, 3])
    ),
    # a directed ring: sparse (25 pairs > 2 x 10 edges), so scored and combined edge by edge
    "ring": graphs.from_edges(5, np.arange(5), (np.arange(5) + 1) % 5),
}


@pytest.mark.parametrize("attack_name", ["scaled", "paper-scaled"])
@pytest.mark.parametrize("graph_name", list(GRAPHS))
@pytest.mark.parametrize(
    ("model", "shape", "optimiser", "expected_forward"),
    [
        (mlp, (6,), "sgd", LayerwiseForward),
        (logistic, (6,), "sgd", LayerwiseForward),
        (TwoLayer, (6,), "adam", VmapForward),
        (cnn, (1, 6, 6), "adam", LayerwiseForward),
    ],
    ids=["mlp-layerwise-sgd", "logistic-closed-form-sgd", "mlp-vmap-adam", "cnn-layerwise-adam"],
)
def test_vectorised_rounds_match_a_per_agent_loop(
    model, shape, optimiser, expected_forward, graph_name, attack_name
) -> None:
    n_train = [12, 13, 9, 15, 11]  # batches [3, 4, 3, 5, 4]: sizes 3, 4 and 5 in one round
    data = agents_data(shape, n_train)
    torch.manual_seed(0)
    case = Case(
        model(),
        data,
        seed=0,
        optimiser=SGD(0.5) if optimiser == "sgd" else Adam(0.05),
        epochs=2,
        batch_size=[3, 4, 3, 5, 4],
        step_probability=[0.5, 1.0, 0.7, 1.0, 0.4],
        dtype=torch.float64,
        activation_budget=64,  # tiny: every batched call is split into several
    )
    assert isinstance(case.forward, expected_forward)
    assert case.rounds_per_epoch == 3
    graph = GRAPHS[graph_name]
    attack = Attack({1}, scale=0.1, trains=optimiser == "sgd", name=attack_name)
    models, records = simulate(case, graph, attack, case.n_rounds)
    assert len(records) == 2  # one record per epoch
    lr = 0.5 if optimiser == "sgd" else 0.05
    for r, rule in enumerate(RULE_NAMES):
        expected, history = reference_run(
            case, data, neighbourhoods(graph), rule, optimiser, lr, case.n_rounds, attack
        )
        normal = [0, 2, 3, 4]
        # every agent's model, the attacker's own included (paper-scaled: what it sent)
        assert torch.allclose(models[r], torch.stack(expected), atol=1e-5, rtol=0)
        for epoch, metrics in enumerate(history):
            for name, values in metrics.items():
                assert np.allclose(
                    records[epoch][name][r, normal], np.array(values)[normal], atol=1e-5
                )
    assert not torch.equal(models[0], models[3])  # the rules did not all do the same thing


@pytest.mark.parametrize("model", [mlp, cnn, TwoLayer])
def test_batched_forward_plans_agree_with_the_module(model) -> None:
    torch.manual_seed(1)
    module = model().double()
    shape = (1, 6, 6) if model is cnn else (6,)
    size = sum(p.numel() for p in module.parameters())
    params = torch.randn(4, size, dtype=torch.float64)
    x = torch.randn(3, 7, *shape, dtype=torch.float64)
    index = torch.tensor([2, 0, 2, 1])
    expected = []
    for g in range(4):
        torch.nn.utils.vector_to_parameters(params[g], module.parameters())
        expected.append(module(x[index[g]]))
    for plan in (batched_forward(module, shape), VmapForward(module)):
        assert torch.allclose(plan(params, x, index), torch.stack(expected), atol=1e-12)


def five_agents(model: nn.Module, **options: int) -> Case:
    """Five agents on 6-d inputs with batches of sizes 3, 4 and 5 in the same round."""
    data = agents_data((6,), [12, 13, 9, 15, 11])
    batch_size = [3, 4, 3, 5, 4]
    return Case(model, data, seed=0, optimiser=SGD(0.1), epochs=1, batch_size=batch_size, **options)


@pytest.mark.parametrize("model", [mlp, logistic])
def test_all_pairs_losses_are_the_per_edge_losses(model) -> None:
    """sender_losses (every model on every agent's batch in one product) against edge_losses on
    the explicit list of all pairs, including rounds with batches of different sizes."""
    case = five_agents(model(), activation_budget=64)
    models = case.init_models(2) + 0.1 * torch.randn(2, 5, case.n_parameters)
    receivers = torch.arange(5).repeat_interleave(5)
    senders = torch.arange(5).repeat(5)
    for iteration in range(case.rounds_per_epoch):
        batch = case.batch(iteration)
        pairs = case.sender_losses(models, batch)
        assert pairs is not None
        expected = case.edge_losses(models[:, senders], receivers, batch).view(2, 5, 5)
        assert torch.allclose(pairs, expected, rtol=1e-5, atol=1e-6)
    assert (
        Case(
            cnn(),
            agents_data((1, 6, 6), [8] * 3),
            seed=0,
            optimiser=SGD(0.1),
            epochs=1,
            batch_size=2,
        ).sender_losses(torch.zeros(1, 3, 1), None)
        is None
    )


def test_edge_losses_of_some_agents_only() -> None:
    """Scoring the messages of a few edges (as the engine does for attacked edges) when some
    batch-size groups receive none of them, or when there are none at all."""
    case = five_agents(mlp())
    batch = case.batch(0)
    assert len(batch.groups) == 3
    models = case.init_models(1)
    pairs = case.sender_losses(models, batch)
    receivers, senders = torch.tensor([3, 3, 0]), torch.tensor([1, 4, 2])  # groups of 5 and 3
    losses = case.edge_losses(models[:, senders], receivers, batch)
    assert torch.allclose(losses, pairs[:, receivers, senders], rtol=1e-5)
    assert case.edge_losses(models[:, :0], receivers[:0], batch).shape == (1, 0)


def test_closed_form_logistic_gradients_are_autograd_gradients() -> None:
    torch.manual_seed(0)
    plan = batched_forward(logistic().double(), (6,))
    assert isinstance(plan, LayerwiseForward) and plan.logistic
    params = torch.randn(4, 6 * 3 + 3, dtype=torch.float64)
    x, y = torch.randn(3, 7, 6, dtype=torch.float64), torch.randint(0, 3, (3, 7))
    index = torch.tensor([2, 0, 2, 1])
    leaf = params.clone().requires_grad_()
    logits = plan(leaf, x, index)
    loss = nn.functional.cross_entropy(logits.flatten(0, 1), y[index].flatten(), reduction="sum")
    (expected,) = torch.autograd.grad(loss / 7, leaf)
    assert torch.allclose(plan.logistic_gradients(params, x, y, index), expected, atol=1e-12)


def test_unsupported_layers_fall_back_to_vmap() -> None:
    batch_norm = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    assert isinstance(batched_forward(batch_norm, (4,)), VmapForward)
    ends_in_images = nn.Sequential(nn.Conv2d(1, 2, 3))
    assert isinstance(batched_forward(ends_in_images, (1, 5, 5)), VmapForward)
    assert isinstance(batched_forward(nn.Linear(3, 2), (3,)), LayerwiseForward)
    assert activation_size(cnn(), (1, 6, 6)) == 2 * 6 * 6


def test_schedule_shuffles_each_epoch_and_serves_every_example_once() -> None:
    n_train, sizes = np.array([10, 7, 12]), np.array([3, 2, 4])
    schedule = Schedule(5, np.arange(3, dtype=np.uint64), n_train, sizes)
    assert schedule.rounds_per_epoch == 3  # min(ceil(10/3), ceil(7/2), ceil(12/4))
    offsets = [0, 10, 17]
    epochs = []
    for epoch in range(2):
        seen: list[list[int]] = [[], [], []]
        for t in range(3):
            batch_sizes, rows = schedule.rows(epoch * 3 + t)
            assert batch_sizes.tolist() == [3, 2, 4]
            for k in range(3):
                seen[k] += (rows[k, : batch_sizes[k]] - offsets[k]).tolist()
        for k in range(3):
            assert len(set(seen[k])) == len(seen[k]) and set(seen[k]) <= set(range(n_train[k]))
        assert sorted(seen[2]) == list(range(12))  # the agent with the fewest batches sees all
        epochs.append(seen)
    assert epochs[0] != epochs[1]  # reshuffled
    again = Schedule(5, np.arange(3, dtype=np.uint64), n_train, sizes)
    assert np.array_equal(again.rows(4)[1], schedule.rows(4)[1])


def test_last_batch_of_an_epoch_is_partial() -> None:
    schedule = Schedule(0, np.arange(2, dtype=np.uint64), np.array([5, 9]), np.array([2, 3]))
    assert schedule.rounds_per_epoch == 3
    assert schedule.rows(2)[0].tolist() == [1, 3]


def test_less_data_agents_learn_at_their_rate_and_are_still_scored() -> None:
    data = agents_data((6,), [40, 40, 40])
    case = Case(
        mlp(),
        data,
        seed=3,
        optimiser=SGD(0.1),
        epochs=100,
        batch_size=4,
        step_probability=[0.25, 1.0, 0.5],
    )
    learned = np.zeros(3)
    for i in range(400):
        batch = case.batch(i)
        learned[batch.learners.numpy()] += 1
        assert sum(len(g.agents) for g in batch.groups) == 3  # everyone has a batch
    assert learned[1] == 400
    assert abs(learned[0] / 400 - 0.25) < 0.06 and abs(learned[2] / 400 - 0.5) < 0.07


def test_flip_labels_flips_the_flagged_agents_only() -> None:
    case = Case(
        mlp(), agents_data((6,), [8, 8, 8]), seed=0, optimiser=SGD(0.1), epochs=1, batch_size=4
    )
    batch = case.batch(0)
    before = batch.groups[0].y.clone()
    flipped = case.flip_labels(batch, torch.tensor([False, True, False]))
    assert torch.equal(batch.groups[0].y, before)  # the input batch is left alone
    assert torch.equal(flipped.groups[0].y[1], 2 - before[1])
    assert torch.equal(flipped.groups[0].y[[0, 2]], before[[0, 2]])


def test_initial_models_are_per_agent_and_reproducible() -> None:
    data = agents_data((6,), [8, 8, 8])
    first = Case(mlp(), data, seed=4, optimiser=SGD(0.1), epochs=1, batch_size=4)
    second = Case(mlp(), data, seed=4, optimiser=SGD(0.1), epochs=1, batch_size=4)
    models = first.init_models(2)
    assert models.shape == (2, 3, 6 * 5 + 5 + 5 * 3 + 3)
    assert torch.equal(models, second.init_models(2))
    assert torch.equal(models[0], models[1]) and not torch.equal(models[0, 0], models[0, 1])


def test_sharded_learning_rounds_equal_whole_ones() -> None:
    """Shards of a dense graph score from the round's all-pairs losses and take all-pairs
    distances shard by shard; the result is that of the unsharded run (float32, attackers)."""
    data = agents_data((6,), [12] * 8, seed=3)
    names = ["loss", "distance", "hardened-loss", "average"]

    def run(shard_edges: int) -> tuple[Simulation, SimState]:
        torch.manual_seed(0)
        case = Case(mlp(), data, seed=0, optimiser=SGD(0.2), epochs=2, batch_size=4)
        rules = [RULES.create(name, {} if name == "average" else {"r0": 1.0}) for name in names]
        attack = ATTACKS.create("scaled", {})
        simulation = Simulation(
            case,
            graphs.complete(8),
            rules,
            attack,
            [2, 5],
            0,
            case.keys,
            torch.float32,
            shard_edges=shard_edges,
        )
        return simulation, simulation.run()

    whole, final = run(1 << 18)
    sharded, final_sharded = run(len(names) * 16)
    assert len(whole.shards) == 1 and len(sharded.shards) == 4
    assert all(shard.dense for shard in sharded.shards)
    assert torch.allclose(final.models, final_sharded.models, rtol=1e-5, atol=1e-6)
    for a, b in zip(final.rule_states, final_sharded.rule_states, strict=True):
        for x, y in ((a.edges, b.edges), (a.agents, b.agents)):
            assert all(torch.allclose(x[k], y[k], rtol=1e-5, atol=1e-6) for k in x)


@pytest.mark.parametrize(
    "first",
    [nn.ReLU(), nn.ReLU(inplace=True), nn.LeakyReLU(0.1, inplace=True), nn.Identity()],
    ids=["relu", "relu-inplace", "leaky-relu-inplace", "identity"],
)
def test_forward_passes_never_modify_stored_data(first: nn.Module) -> None:
    """A Sequential that starts with an element-wise layer (in place or not) reads the stored
    examples through views: neither the case's data nor the caller's arrays may change, and
    evaluating twice gives the same numbers."""
    data = agents_data((6,), [8, 8, 8])
    arrays = [(d.x_train.copy(), d.x_test.copy()) for d in data]
    model = nn.Sequential(first, nn.Linear(6, 4), nn.LeakyReLU(0.1, inplace=True), nn.Linear(4, 3))
    case = Case(
        model, data, seed=0, optimiser=SGD(0.1), epochs=1, batch_size=4, dtype=torch.float64
    )
    stored = [case.test_set[0].clone(), case.train_eval_set[0].clone()]
    assert bool((stored[0] < 0).any())  # there is something to overwrite
    rules = [RULES.create("loss")]  # one replica: every agent evaluates its model in place
    simulation = Simulation(case, graphs.complete(3), rules, None, [], 0, case.keys)
    state = simulation.init_state()
    evaluated = case.evaluate(state.models, case.test_set)
    for _ in range(2):
        batch = case.batch(0)
        inputs = batch.groups[0].x.clone()
        case.edge_losses(state.models[:, [0, 1]], torch.tensor([2, 2]), batch)
        assert torch.equal(batch.groups[0].x, inputs)
    state = simulation.run(state)
    assert torch.equal(case.test_set[0], stored[0])
    assert torch.equal(case.train_eval_set[0], stored[1])
    for agent, (x_train, x_test) in zip(data, arrays, strict=True):
        assert np.array_equal(agent.x_train, x_train) and np.array_equal(agent.x_test, x_test)
    again = case.evaluate(simulation.init_state().models, case.test_set)
    assert all(torch.equal(a, b) for a, b in zip(evaluated, again, strict=True))
