"""The robust aggregators against plain per-receiver computations, their laws, and their checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from byzmtl import graph as graphs
from byzmtl.attacks import ATTACKS
from byzmtl.config import ConfigError
from byzmtl.engine import Simulation
from byzmtl.experiment import prepare
from byzmtl.neighbourhoods import Neighbourhoods
from byzmtl.rules import RULES, RuleAssumptionError, RuleInputs
from byzmtl.tasks.target_localization import TargetLocalization, TargetLocalizationSettings

ROBUST = [
    "median",
    "trimmed-mean",
    "krum",
    "multi-krum",
    "geometric-median",
    "clipped-gossip",
    "ubar",
    "hardened-loss",
]
F64 = torch.float64


def combine(rule, x: RuleInputs) -> tuple[np.ndarray, np.ndarray]:
    """The rule's new models and edge weights for one round (fresh state)."""
    out, _ = rule.step(x, rule.init_state(x.edges, F64))
    return out.models.numpy(), out.weights.numpy()


@st.composite
def rounds(draw: st.DrawFn, min_degree: int = 1) -> tuple[Neighbourhoods, RuleInputs]:
    """A random directed graph, per-edge messages (some arbitrary, some non-finite), losses."""
    n = draw(st.integers(2, 7))
    d = draw(st.integers(1, 3))
    pairs = [(k, l) for k in range(n) for l in range(n) if k != l]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=len(pairs)))
    graph = graphs.from_edges(n, np.array([k for k, _ in chosen]), np.array([l for _, l in chosen]))
    assume(graph.degrees.min() >= min_degree)
    edges = Neighbourhoods.from_graph(graph)
    value = st.floats(-10, 10, allow_nan=False)
    psi = torch.tensor(
        draw(st.lists(st.lists(value, min_size=d, max_size=d), min_size=n, max_size=n)), dtype=F64
    )
    messages = psi[edges.senders].clone()
    finite = torch.ones(edges.n_edges, dtype=torch.bool)
    for e in range(edges.n_edges):
        if edges.is_self[e]:
            continue
        kind = draw(st.sampled_from(["honest", "arbitrary", "huge", "non-finite"]))
        if kind == "arbitrary":
            messages[e] = torch.tensor(draw(st.lists(value, min_size=d, max_size=d)), dtype=F64)
        elif kind == "huge":
            messages[e] = 1e30 * (1 + torch.arange(d, dtype=F64))
        elif kind == "non-finite":
            messages[e], finite[e] = 0.0, False
    losses = torch.tensor(
        draw(st.lists(st.floats(0.0, 5.0), min_size=edges.n_edges, max_size=edges.n_edges)),
        dtype=F64,
    ).masked_fill(~finite, math.inf)
    x = RuleInputs(edges, messages, finite, bool(finite.all()), psi, psi, losses, 0)
    return edges, x


def neighbourhood(x: RuleInputs, k: int) -> tuple[list[int], np.ndarray, int]:
    """Receiver k's edges with finite messages, their messages, and its non-finite count."""
    mine = [e for e in range(x.edges.n_edges) if int(x.edges.receivers[e]) == k]
    valid = [e for e in mine if bool(x.finite[e])]
    return valid, x.messages[valid].numpy(), len(mine) - len(valid)


def plain_trimmed(values: np.ndarray, trim: int) -> np.ndarray:
    ordered = np.sort(values, axis=0)
    return ordered[trim : len(values) - trim].mean(0)


def krum_plain(values: np.ndarray, f: int) -> np.ndarray:
    c = len(values)
    scores = []
    for i in range(c):
        distances = sorted(float(np.sum((values[i] - values[j]) ** 2)) for j in range(c) if j != i)
        scores.append(sum(distances[: max(c - f - 2, 0)]))
    return np.array(scores)


def separated(scores: np.ndarray, rank: int) -> bool:
    """The rank-th and (rank+1)-th smallest scores differ clearly (no tie to break)."""
    ordered = np.sort(scores)
    if rank + 1 >= len(ordered):
        return True
    return ordered[rank + 1] - ordered[rank] > 1e-6 * (1 + abs(ordered[rank]))


@settings(max_examples=60, deadline=None)
@given(rounds())
def test_median_and_trimmed_mean_match_plain_sorting(case) -> None:
    edges, x = case
    median, weights = combine(RULES.create("median", {"f": 0}), x)
    trimmed, _ = combine(RULES.create("trimmed-mean", {"b": 1}), x)
    for k in range(edges.n_agents):
        _, values, missing = neighbourhood(x, k)
        np.testing.assert_allclose(median[k], np.median(values, axis=0), rtol=1e-12)
        trim = max(1 - missing, 0)
        if len(values) > 2 * trim:
            np.testing.assert_allclose(trimmed[k], plain_trimmed(values, trim), rtol=1e-12)
    per_receiver = np.bincount(edges.receivers.numpy(), weights, minlength=edges.n_agents)
    np.testing.assert_allclose(per_receiver, 1.0)
    assert np.all(weights[~x.finite.numpy()] == 0)


@settings(max_examples=60, deadline=None)
@given(rounds(), st.integers(0, 1))
def test_krum_and_multi_krum_match_plain_scores(case, f: int) -> None:
    edges, x = case
    krum, _ = combine(RULES.create("krum", {"f": f}), x)
    multi, _ = combine(RULES.create("multi-krum", {"f": f}), x)
    for k in range(edges.n_agents):
        _, values, missing = neighbourhood(x, k)
        f_k = max(f - missing, 0)
        scores = krum_plain(values, f_k)
        kept = len(values) - f_k
        if not (separated(scores, 0) and separated(scores, kept - 1)):
            continue  # a tie: either choice is right; the other agents are still checked
        np.testing.assert_allclose(krum[k], values[np.argmin(scores)], rtol=1e-12)
        best = np.argsort(scores, kind="stable")[:kept]
        np.testing.assert_allclose(multi[k], values[best].mean(0), rtol=1e-9)


@settings(max_examples=40, deadline=None)
@given(rounds())
def test_geometric_median_matches_plain_weiszfeld(case) -> None:
    edges, x = case
    rule = RULES.create("geometric-median", {"f": 0, "iterations": 5, "smoothing": 1e-6})
    models, _ = combine(rule, x)
    for k in range(edges.n_agents):
        _, values, _ = neighbourhood(x, k)
        z = np.median(values, axis=0)
        for _ in range(5):
            beta = 1 / np.maximum(1e-6, np.linalg.norm(values - z, axis=1))
            z = (beta[:, None] * values).sum(0) / beta.sum()
        np.testing.assert_allclose(models[k], z, rtol=1e-9, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(rounds(), st.floats(0.01, 20.0))
def test_clipped_gossip_matches_plain_clipping(case, tau: float) -> None:
    edges, x = case
    models, _ = combine(RULES.create("clipped-gossip", {"tau": tau}), x)
    psi = x.psi.numpy()
    for k in range(edges.n_agents):
        _, values, _ = neighbourhood(x, k)
        moves = values - psi[k]
        norms = np.linalg.norm(moves, axis=1)
        clipped = moves * np.minimum(1.0, tau / np.where(norms > 0, norms, 1.0))[:, None]
        expected = psi[k] + clipped.sum(0) / len(values)
        np.testing.assert_allclose(models[k], expected, rtol=1e-9, atol=1e-9)
        # the law of the issue: never moved further than tau times its neighbour count
        assert np.linalg.norm(models[k] - psi[k]) <= tau * (len(values) - 1) + 1e-9


@settings(max_examples=60, deadline=None)
@given(rounds(), st.sampled_from([0.3, 0.5, 1.0]))
def test_two_stage_matches_plain_selection(case, rho: float) -> None:
    edges, x = case
    models, _ = combine(RULES.create("ubar", {"rho": rho}), x)
    psi = x.psi.numpy()
    losses = x.losses.numpy()
    for k in range(edges.n_agents):
        valid, values, _ = neighbourhood(x, k)
        degree = int(edges.degrees[k])
        distances = np.linalg.norm(values - psi[k], axis=1)
        shortlist = math.ceil(rho * degree - 1e-9)
        if not separated(distances, shortlist - 1):
            continue  # a tie at the shortlist's edge: either choice is right
        near = np.argsort(distances, kind="stable")[:shortlist]
        own = losses[int(edges.self_edges[k])]
        kept = [i for i in near if losses[valid[i]] <= own]
        np.testing.assert_allclose(models[k], values[kept].mean(0), rtol=1e-9, atol=1e-12)


def complete_round(psi: torch.Tensor) -> RuleInputs:
    return RuleInputs.sent(Neighbourhoods.from_graph(graphs.complete(len(psi))), psi)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(3, 9).flatmap(
        lambda n: st.tuples(
            st.lists(st.lists(st.floats(-5, 5), min_size=2, max_size=2), min_size=n, max_size=n),
            st.permutations(list(range(n))),
        )
    ),
    st.sampled_from(["median", "trimmed-mean"]),
)
def test_coordinatewise_rules_are_permutation_invariant(data, name: str) -> None:
    values, permutation = data
    rule = RULES.create(name, {"f": 1} if name == "median" else {"b": 1})
    psi = torch.tensor(values, dtype=F64)
    before, _ = combine(rule, complete_round(psi))
    after, _ = combine(rule, complete_round(psi[permutation]))
    np.testing.assert_allclose(after, before, rtol=1e-12)
    np.testing.assert_allclose(before, before[0:1].repeat(len(values), 0), rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(3, 9).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, (n - 1) // 2))),
    st.data(),
    st.sampled_from(["median", "trimmed-mean"]),
)
def test_below_breakdown_the_aggregate_stays_in_the_honest_range(size, data, name) -> None:
    n, f = size
    value = st.floats(-5, 5, allow_subnormal=False)
    honest = data.draw(
        st.lists(st.lists(value, min_size=2, max_size=2), min_size=n - f, max_size=n - f)
    )
    bad = data.draw(
        st.lists(st.lists(st.floats(-1e12, 1e12), min_size=2, max_size=2), min_size=f, max_size=f)
    )
    params = {"b": f} if name == "trimmed-mean" else {"f": f}
    psi = torch.tensor(honest + bad, dtype=F64)
    models, _ = combine(RULES.create(name, params), complete_round(psi))
    low, high = np.min(honest, axis=0), np.max(honest, axis=0)
    rounding = 4 * np.finfo(float).eps * np.maximum(np.abs(low), np.abs(high))
    assert np.all(models >= low - rounding) and np.all(models <= high + rounding)


def test_krum_picks_an_honest_vector_in_the_textbook_example() -> None:
    generator = np.random.default_rng(0)
    honest = generator.normal(0.0, 0.1, size=(7, 3))
    colluding = np.full((2, 3), 4.0)  # f = 2 attackers agree on one far point
    psi = torch.tensor(np.vstack([honest, colluding]))
    models, weights = combine(RULES.create("krum", {"f": 2}), complete_round(psi))
    for k in range(9):
        assert any(np.allclose(models[k], h) for h in honest)
    edges = Neighbourhoods.from_graph(graphs.complete(9))
    assert np.all(weights[np.isin(edges.senders.numpy(), [7, 8])] == 0)


def test_hand_checked_values() -> None:
    psi = torch.tensor([[1.0], [2.0], [4.0], [100.0]], dtype=F64)
    x = complete_round(psi)
    assert combine(RULES.create("median", {"f": 1}), x)[0][0, 0] == 3.0
    assert combine(RULES.create("trimmed-mean", {"b": 1}), x)[0][0, 0] == 3.0
    # Krum with f = 0: scores sum the 2 closest squared distances; agent 1 (2: 1 + 4) wins
    assert combine(RULES.create("krum", {"f": 0}), x)[0][0, 0] == 2.0
    assert combine(RULES.create("multi-krum", {"f": 0, "m": 3}), x)[0][0, 0] == pytest.approx(7 / 3)
    # clipping at 1 around agent 0: (0 + 1 + 1 + 1) / 4 moves it by 3/4
    assert combine(RULES.create("clipped-gossip", {"tau": 1.0}), x)[0][0, 0] == 1.75
    # median weights: the two middle senders share the weight
    _, weights = combine(RULES.create("median", {"f": 1}), x)
    assert weights[:4].tolist() == [0.0, 0.5, 0.5, 0.0]


def test_non_finite_messages_are_absent_and_count_against_the_budget() -> None:
    edges = Neighbourhoods.from_graph(graphs.complete(5))
    psi = torch.tensor([[0.0], [1.0], [2.0], [3.0], [50.0]], dtype=F64)
    finite = edges.senders != 4  # the attacker's message was NaN: zeroed and flagged
    messages = psi[edges.senders].masked_fill(~finite[:, None], 0.0)
    losses = torch.zeros(edges.n_edges, dtype=F64).masked_fill(~finite, math.inf)
    x = RuleInputs(edges, messages, finite, False, psi, psi, losses, 0)
    # trimmed mean with b = 1: the NaN sender used up the budget, nothing else is trimmed
    assert combine(RULES.create("trimmed-mean", {"b": 1}), x)[0][0, 0] == 1.5
    from_attacker = ((edges.senders == 4) & ~edges.is_self).numpy()
    for name in ROBUST:
        models, weights = combine(RULES.create(name), x)
        assert np.isfinite(models).all(), name
        assert np.all(weights[from_attacker] == 0), name


@settings(max_examples=40, deadline=None)
@given(rounds(), st.sampled_from(ROBUST))
def test_edge_weights_are_a_distribution_over_each_neighbourhood(case, name: str) -> None:
    edges, x = case
    rule = RULES.create(name, {"f": 0} if "krum" in name else {"b": 1} if "trim" in name else {})
    try:
        rule.check(edges)
    except RuleAssumptionError:
        assume(False)
    models, weights = combine(rule, x)
    assert np.isfinite(models).all() and np.all(weights >= 0)
    per_receiver = np.bincount(edges.receivers.numpy(), weights, minlength=edges.n_agents)
    np.testing.assert_allclose(per_receiver, 1.0, rtol=1e-9)
    assert np.all(weights[~x.finite.numpy()] == 0)


@pytest.mark.parametrize(
    ("name", "params", "minimum", "enough"),
    [
        ("median", {"f": 2}, 5, 5),
        ("trimmed-mean", {"b": 2}, 5, 5),
        ("krum", {"f": 1}, 5, 5),
        ("multi-krum", {"f": 1, "m": 5}, 5, 6),
        ("geometric-median", {"f": 2}, 5, 5),
    ],
)
def test_assumptions_are_checked_per_agent(name: str, params: dict, minimum: int, enough: int):
    # a ring with one hub: agent 0 hears everyone, the others hear 2 neighbours (degree 3)
    n = 8
    ring = graphs.ring(n)
    hub = graphs.from_edges(
        n,
        np.concatenate([ring.receivers, np.zeros(n, dtype=np.int64)]),
        np.concatenate([ring.senders, np.arange(n)]),
    )
    rule = RULES.create(name, params)
    with pytest.raises(RuleAssumptionError, match=rf"{name}: agent 1 has 3 agents .*{minimum}"):
        rule.check(Neighbourhoods.from_graph(hub))
    rule.check(Neighbourhoods.from_graph(graphs.complete(enough)))
    if enough > minimum:
        with pytest.raises(RuleAssumptionError, match=rf"agent 0 has {minimum} agents"):
            rule.check(Neighbourhoods.from_graph(graphs.complete(minimum)))


def test_a_run_refuses_a_rule_whose_assumptions_fail() -> None:
    with pytest.raises(ConfigError, match=r"rules: krum: agent \d+ has \d+ agents"):
        prepare(
            {
                "case": "target-localization",
                "rules": ["krum"],
                "task": {"agents": 12},
                "rule_params": {"krum": {"f": 5}},
            }
        )


@pytest.mark.parametrize("name", ROBUST)
def test_every_rule_is_sharding_invariant_and_survives_nan(name: str) -> None:
    task = TargetLocalization.from_settings(TargetLocalizationSettings(agents=60, iterations=8), 2)
    graph = graphs.geometric(task.positions, 1.0, 10, seed=2, keys=task.keys)

    def run(shard_edges: int, attack: str):
        rule = RULES.create(name, {"f": 1} if name in ("krum", "multi-krum") else {})
        sim = Simulation(
            task,
            graph,
            [rule],
            ATTACKS.create(attack),
            [4, 9, 33],
            2,
            task.keys,
            shard_edges=shard_edges,
        )
        outputs = []
        return sim, sim.run(on_round=lambda state, output: outputs.append(output)), outputs

    whole, final, outputs = run(1 << 18, "constant")
    sharded, final_sharded, outputs_sharded = run(50, "constant")
    assert len(whole.shards) == 1 and len(sharded.shards) > 5
    torch.testing.assert_close(final.models, final_sharded.models, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(outputs[-1].weights[0], outputs_sharded[-1].weights[0])
    _, nan_final, _ = run(1 << 18, "nan")
    normal = np.setdiff1d(np.arange(60), [4, 9, 33])
    assert torch.isfinite(nan_final.models[:, normal]).all()
