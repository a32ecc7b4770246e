"""The vectorised engine against the plain oracle, and the laws of the paper's rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from byzmtl import graph as graphs
from byzmtl.attacks import ATTACKS
from byzmtl.engine import Simulation, make_shards
from byzmtl.engine.messages import ShardMessages
from byzmtl.neighbourhoods import Neighbourhoods
from byzmtl.ops import all_squared_distances
from byzmtl.rules import RULES
from byzmtl.rules.base import RuleState
from byzmtl.tasks.target_localization import TargetLocalization, TargetLocalizationSettings
from tests.oracle import run_oracle, scale_factor

PAPER_RULES = ["loss", "distance", "average", "none"]


@st.composite
def networks(draw: st.DrawFn) -> dict:
    """A small random directed network with some Byzantine agents and rule parameters."""
    n = draw(st.integers(2, 7))
    pairs = [(k, l) for k in range(n) for l in range(n) if k != l]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=len(pairs)))
    byzantine = draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n - 1))
    return {
        "n": n,
        "edges": chosen,
        "byzantine": sorted(byzantine),
        "seed": draw(st.integers(0, 2**31)),
        "nu": draw(st.floats(0.01, 0.99)),
        "r0": draw(st.floats(0.1, 50.0)),
        "attack": draw(st.sampled_from(["constant", "scaled"])),
    }


def simulate(net: dict, iterations: int = 12, rules: list[str] = PAPER_RULES):
    """Build and run the engine on ``net``; return (simulation, per-iteration models, outputs)."""
    n, seed = net["n"], net["seed"]
    task = TargetLocalization.from_settings(
        TargetLocalizationSettings(agents=n, iterations=iterations, noisy_agents=min(5, n)),
        seed,
    )
    receivers = np.array([k for k, _ in net["edges"]], dtype=np.int64)
    senders = np.array([l for _, l in net["edges"]], dtype=np.int64)
    graph = graphs.from_edges(n, receivers, senders, task.positions)
    params = {"nu": net["nu"], "r0": net["r0"]}
    created = [RULES.create(r, params if r in ("loss", "distance") else {}) for r in rules]
    attack = ATTACKS.create(net["attack"])
    sim = Simulation(task, graph, created, attack, net["byzantine"], seed, task.keys)
    history, outputs = [], []

    def keep(state, output):
        history.append(state.models.clone())
        outputs.append(output)

    final = sim.run(on_round=keep)
    return sim, task, graph, history, outputs, final


def oracle_for(net: dict, sim: Simulation, task: TargetLocalization, graph, rule: str):
    neighbours: dict[int, list[int]] = {k: [] for k in range(net["n"])}
    for k, l in zip(graph.receivers.tolist(), graph.senders.tolist(), strict=True):
        neighbours[k].append(l)
    samples = []
    for i in range(task.n_rounds):
        batch = task.batch(i)
        samples.append((batch.u.numpy(), batch.b.numpy(), batch.q.numpy()))
    start = sim.init_state().models[0].tolist()
    params = {"constant": {"value": 15.0, "spread": 1.0}, "scaled": {"scale": 0.1}}[net["attack"]]
    return run_oracle(
        rule=rule,
        neighbours=neighbours,
        start=start,
        samples=samples,
        mu=task.mu,
        nu=net["nu"],
        r0=net["r0"],
        byzantine=set(net["byzantine"]),
        attack=net["attack"],
        attack_params=params,
        seed=net["seed"],
        keys=task.keys,
    )


@settings(max_examples=25, deadline=None)
@given(networks())
def test_engine_matches_plain_oracle(net: dict) -> None:
    sim, task, graph, history, _, _ = simulate(net)
    normal = [k for k in range(net["n"]) if k not in net["byzantine"]]
    for r, rule in enumerate(PAPER_RULES):
        expected = np.array(oracle_for(net, sim, task, graph, rule))[:, normal]
        got = torch.stack([h[r] for h in history]).numpy()[:, normal]
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9, err_msg=rule)


def test_oracle_comparison_includes_attacked_rounds() -> None:
    """The oracle test is not vacuous: with attackers the rules really differ from each other."""
    net = {
        "n": 6,
        "edges": [(k, l) for k in range(6) for l in range(6) if k != l],
        "byzantine": [1, 4],
        "seed": 3,
        "nu": 0.1,
        "r0": 10.0,
        "attack": "constant",
    }
    _, _, _, history, _, _ = simulate(net, iterations=30)
    final = history[-1]
    assert not torch.allclose(final[0], final[2])  # loss differs from average
    assert (final[2, [0, 2, 3, 5]] > 5).all()  # average is dragged towards the fake estimate


@settings(max_examples=25, deadline=None)
@given(networks())
def test_weight_laws(net: dict) -> None:
    sim, _, _, _, outputs, final = simulate(net)
    edges = sim.edges
    normal = torch.ones(net["n"], dtype=torch.bool)
    normal[net["byzantine"]] = False
    for output in outputs:
        for weights in output.weights:
            assert (weights >= 0).all()
            sums = edges.sum_per_receiver(weights)
            torch.testing.assert_close(sums[normal], torch.ones_like(sums[normal]))
        loss_weights = output.weights[0]
        assert (loss_weights[edges.self_edges][normal] > 0).all()  # a normal agent keeps itself
    scores = final.rule_states[0].edges["r"]
    filtered = scores > scores[edges.receiver_self_edge]
    assert (outputs[-1].weights[0][filtered] == 0).all()


@settings(max_examples=15, deadline=None)
@given(networks())
def test_no_cooperation_is_the_plain_local_step(net: dict) -> None:
    sim, task, _, history, _, _ = simulate(net, rules=["none"])
    w = sim.init_state().models[0]
    for i, models in enumerate(history):
        batch = task.batch(i)
        w = w + task.mu * (batch.q - w)
        torch.testing.assert_close(models[0], w, rtol=0, atol=1e-12)


def test_relabelling_agents_permutes_results() -> None:
    settings_ = TargetLocalizationSettings(agents=40, iterations=60)
    task = TargetLocalization.from_settings(settings_, seed=5)
    graph = graphs.geometric(task.positions, 1.0, 10, seed=5, keys=task.keys)
    byzantine = np.array([3, 11, 17, 30])
    perm = np.random.default_rng(0).permutation(40)

    def final_models(t, g, byz):
        rules = [RULES.create(r) for r in PAPER_RULES]
        sim = Simulation(t, g, rules, ATTACKS.create("scaled"), byz, 5, t.keys)
        return sim.run().models

    original = final_models(task, graph, byzantine)
    relabelled = final_models(task.permuted(perm), graph.relabel(perm), perm[byzantine])
    torch.testing.assert_close(relabelled[:, perm], original, rtol=1e-12, atol=1e-12)


def test_same_seed_same_bits_and_other_seed_differs() -> None:
    import byzmtl

    config = {"case": "target-localization", "attackers": 20, "seed": 7, "task": {"iterations": 80}}
    first = byzmtl.run(config).metrics
    second = byzmtl.run(config).metrics
    assert first.equals(second)
    other = byzmtl.run({**config, "seed": 8}).metrics
    assert not np.allclose(first["loss_mean"], other["loss_mean"])


@pytest.mark.parametrize("attack", ["nan", "inf", "huge"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_malformed_messages_never_poison_normal_models(attack: str, dtype: str) -> None:
    import byzmtl

    config = {
        "case": "target-localization",
        "attackers": 30,
        "attack": "constant" if attack == "huge" else attack,
        "attack_params": {"value": 1e38, "spread": 0.0} if attack == "huge" else {},
        "dtype": dtype,
        "task": {"iterations": 40},
    }
    result = byzmtl.run(config)
    normal = result.experiment.normal
    models = result.state.models[:, normal]
    for r, rule in enumerate(result.config.rules):
        assert torch.isfinite(models[r]).all(), f"{rule} under {attack}"
    assert result.final("loss", "loss") < 1.0


@pytest.mark.parametrize(
    ("attack", "names"),
    [("constant", PAPER_RULES), ("nan", PAPER_RULES), ("alie", None), ("nan", None)],
)
def test_sharded_combine_changes_no_result(attack: str, names: list[str] | None) -> None:
    """Shards are an implementation detail: every rule, the robust aggregators included (names
    None: every registered rule whose assumptions this graph meets), gives the same bits."""
    settings_ = TargetLocalizationSettings(agents=60, iterations=40)
    task = TargetLocalization.from_settings(settings_, seed=2)
    graph = graphs.geometric(task.positions, 1.0, 10, seed=2, keys=task.keys)
    if names is None:
        names = [n for n in RULES.names() if n not in ("krum", "multi-krum")]  # need degree > 4

    def run(shard_edges: int):
        rules = [RULES.create(r) for r in names]
        sim = Simulation(
            task,
            graph,
            rules,
            ATTACKS.create(attack),
            [4, 9, 33],
            2,
            task.keys,
            shard_edges=shard_edges,
        )
        outputs = []
        final = sim.run(on_round=lambda state, output: outputs.append(output))
        return sim, final, outputs

    whole, final, outputs = run(1 << 18)
    sharded, final_sharded, outputs_sharded = run(len(names) * 50)
    assert len(whole.shards) == 1 and len(sharded.shards) > 5
    assert torch.equal(final.models, final_sharded.models)
    for a, b in zip(final.rule_states, final_sharded.rule_states, strict=True):
        assert same_state(a, b)
    for a, b in zip(outputs[-1].weights, outputs_sharded[-1].weights, strict=True):
        assert (a is None and b is None) or torch.equal(a, b)


def test_attackers_that_do_not_train_keep_and_send_their_initial_model() -> None:
    from byzmtl.attacks.base import AttackInputs

    seen = []

    class Spy(ATTACKS.get("scaled")):  # type: ignore[misc]
        def messages(self, x: AttackInputs) -> torch.Tensor:
            seen.append(x.psi[:, x.senders].clone())
            return super().messages(x)

    task = TargetLocalization.from_settings(TargetLocalizationSettings(agents=30, iterations=20), 1)
    graph = graphs.geometric(task.positions, 1.0, 10, seed=1, keys=task.keys)
    sim = Simulation(task, graph, [RULES.create("loss")], Spy(trains=False), [3, 8], 1, task.keys)
    start = sim.init_state().models
    final = sim.run()
    torch.testing.assert_close(final.models[:, [3, 8]], start[:, [3, 8]], rtol=0, atol=0)
    attacked_senders = sim.edges.senders[sim.attack_edges]
    for psi_senders in seen:
        torch.testing.assert_close(psi_senders, start[:, attacked_senders], rtol=0, atol=0)


def test_lazy_messages_are_the_gathered_messages() -> None:
    """m_lk = psi_l except on attacked edges, built only on first use; squared distances on a
    dense shard come from all pairs (float32: one float64 product) without building them."""
    graph = graphs.complete(6)
    edges = Neighbourhoods.from_graph(graph)
    attack_edges = torch.nonzero(torch.isin(edges.senders, torch.tensor([1, 4]))).flatten()
    (shard,) = make_shards(edges, attack_edges, 1 << 20)
    generator = torch.Generator().manual_seed(0)
    psi = torch.randn(2, 6, 50, generator=generator)
    values = torch.randn(2, len(attack_edges), 50, generator=generator)
    targets = psi[1] + 1e-3 * torch.randn(6, 50, generator=generator)  # close: cancellation
    expected = psi[:, edges.senders].clone()
    expected[:, attack_edges] = values
    buffer = torch.empty(2, edges.n_edges, 50)
    assert shard.dense
    messages = ShardMessages(psi, shard, values, buffer)
    exact = (expected[1].double() - targets.double()[edges.receivers]).square().sum(1)
    distances = messages.squared_distances(1, targets)
    assert distances.dtype == torch.float32
    assert torch.allclose(distances.double(), exact, rtol=1e-5, atol=0)
    assert torch.equal(messages.replica(0).tensor(), expected[0])
    assert messages.tensor().data_ptr() == buffer.data_ptr()  # gathered into the buffer
    assert torch.allclose(messages.squared_distances(1, targets).double(), exact, rtol=1e-5)


def test_all_squared_distances_match_exact_differences() -> None:
    generator = torch.Generator().manual_seed(1)
    a = 100.0 + torch.randn(7, 300, generator=generator)  # large norms, close rows
    b = torch.cat([a[:3] + 1e-2 * torch.randn(3, 300, generator=generator), a[3:]])
    exact = (a.double()[:, None] - b.double()[None]).square().sum(-1)
    got = all_squared_distances(a, b)
    assert got.dtype == torch.float32 and bool((got >= 0).all())
    norms = a.double().square().sum(1)[:, None] + b.double().square().sum(1)[None]
    error = (got.double() - exact).abs()
    assert bool((error <= 1e-6 * exact + 1e-14 * norms).all())  # float32 output; cancellation


@pytest.mark.parametrize("dense", [True, False])
def test_dense_and_sparse_combines_agree_with_the_messages(dense: bool) -> None:
    """The engine combines from [psi; attack messages] with a dense weight matrix or a sparse
    product; both equal sum_l c_lk m_lk over the gathered messages."""
    n, byzantine = 8, [2, 5]
    ring = graphs.from_edges(n, np.arange(n), (np.arange(n) + 3) % n)
    graph = graphs.complete(n) if dense else ring  # dense: 8 x 8 entries <= 2 x 64 edges
    case = TargetLocalization.from_settings(
        TargetLocalizationSettings(agents=n, iterations=3), seed=0, dtype=torch.float64
    )
    rules = [RULES.create(name, {}) for name in ("distance", "average")]
    simulation = Simulation(case, graph, rules, ATTACKS.create("scaled", {}), byzantine, 0)
    state = simulation.init_state()
    after, output = simulation.step(state)
    (shard,) = simulation.shards
    assert shard.dense == dense  # the combine takes the dense or the sparse product
    batch = case.batch(0)
    psi, _ = case.adapt(state.models, batch, state.task_state, 0)
    messages = psi[:, simulation.edges.senders].clone()
    keys = simulation.keys
    for e in simulation.attack_edges.tolist():  # the scaled attack's a * psi_l, as the oracle
        k, l = int(simulation.edges.receivers[e]), int(simulation.edges.senders[e])
        messages[:, e] *= scale_factor(0, int(keys[l]), int(keys[k]), 0, 0.1)
    weights = [w for w in output.weights if w is not None]  # both rules weigh every edge
    expected = simulation.edges.combine(torch.stack(weights), messages)
    normal = [k for k in range(n) if k not in byzantine]
    assert torch.allclose(after.models[:, normal], expected[:, normal], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("byzantine", [[-1], [2, -6], [6], [1.5]])
def test_byzantine_ids_outside_the_network_are_a_one_line_error(byzantine: list) -> None:
    """A negative id must not wrap around to the last agents (-1 would be agent 5)."""
    task = TargetLocalization.from_settings(
        TargetLocalizationSettings(agents=6, iterations=2), seed=0
    )
    rules, attack = [RULES.create("loss")], ATTACKS.create("scaled")
    with pytest.raises(ValueError, match=r"^byzantine: agent ids must be integers in \[0, 6\)"):
        Simulation(task, graphs.complete(6), rules, attack, byzantine, 0)


def test_a_simulation_without_rules_is_an_error() -> None:
    task = TargetLocalization.from_settings(
        TargetLocalizationSettings(agents=6, iterations=2), seed=0
    )
    with pytest.raises(ValueError, match="at least one rule"):
        Simulation(task, graphs.complete(6), [], None, [], 0)


def same_state(a: RuleState, b: RuleState) -> bool:
    """Two rule states hold the same tensors, bit for bit."""
    return all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
        for x, y in ((a.edges, b.edges), (a.agents, b.agents))
    )
