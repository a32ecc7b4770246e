"""Rules at the edges of floating point: normalisation of any affinities, and each rule where
its sums, distances or inverses would overflow or underflow (the fuzz test of every rule is
tests/test_rule_fuzz.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from byzmtl import graph as graphs
from byzmtl.neighbourhoods import Neighbourhoods
from byzmtl.rules import RULES, RuleInputs

F32, F64 = torch.float32, torch.float64


def affinity_values(dtype: torch.dtype) -> list[float]:
    info = torch.finfo(dtype)
    huge = 1e38 if dtype == F32 else 1e300
    special = [math.nan, -1.0, -math.inf, math.inf, 0.0, info.tiny * info.eps, info.tiny]
    return [*special, 1.0, 3.0, huge, info.max]


@st.composite
def graphs_and_affinities(draw: st.DrawFn) -> tuple[Neighbourhoods, torch.Tensor]:
    n = draw(st.integers(1, 6))
    pairs = [(k, m) for k in range(n) for m in range(n) if k != m]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True)) if pairs else []
    graph = graphs.from_edges(n, np.array([k for k, _ in chosen]), np.array([m for _, m in chosen]))
    edges = Neighbourhoods.from_graph(graph)
    dtype = draw(st.sampled_from([F32, F64]))
    values = st.sampled_from(affinity_values(dtype)) | st.floats(0, 10, width=32)
    size = 2 * edges.n_edges
    a = torch.tensor(draw(st.lists(values, min_size=size, max_size=size)), dtype=dtype)
    return edges, a.view(2, edges.n_edges)


@settings(max_examples=150, deadline=None)
@given(graphs_and_affinities())
def test_normalise_gives_a_distribution_for_any_affinities(case) -> None:
    edges, affinities = case
    weights = edges.normalise(affinities)
    assert torch.isfinite(weights).all() and (weights >= 0).all()
    receivers = edges.receivers.numpy()
    tiny = torch.finfo(affinities.dtype).tiny  # smaller weights may underflow
    for row in range(2):
        a = affinities[row].double().numpy()
        clean = np.where(a >= 0, a, 0.0)  # NaN and negative count as 0
        w = weights[row].double().numpy()
        for k in range(edges.n_agents):
            mine = receivers == k
            a_k, w_k = clean[mine], w[mine]
            np.testing.assert_allclose(w_k.sum(), 1.0, rtol=1e-6)
            if np.isinf(a_k).any():
                expected = np.isinf(a_k) / np.isinf(a_k).sum()
            elif not a_k.any():
                expected = edges.is_self[mine].numpy().astype(float)
            else:
                expected = a_k / a_k.max() / (a_k / a_k.max()).sum()
            np.testing.assert_allclose(w_k, expected, rtol=1e-5, atol=tiny)
            assert np.all(w_k[a_k == 0] == 0) or not a_k.any()


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_normalise_is_exactly_a_over_its_sum_on_ordinary_affinities(dtype) -> None:
    edges = Neighbourhoods.from_graph(graphs.erdos_renyi(40, 0.2, seed=3))
    generator = torch.Generator().manual_seed(0)
    affinities = torch.rand(3, edges.n_edges, dtype=dtype, generator=generator)
    totals = torch.stack([edges.sum_per_receiver(row) for row in affinities])
    expected = affinities / totals[:, edges.receivers]
    assert torch.equal(edges.normalise(affinities), expected)


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_a_convex_combination_of_the_largest_floats_stays_finite(dtype) -> None:
    edges = Neighbourhoods.from_graph(graphs.complete(7))
    largest = torch.finfo(dtype).max
    messages = torch.full((edges.n_edges, 2), largest, dtype=dtype)
    messages[:, 1] = -largest
    generator = torch.Generator().manual_seed(1)
    for _ in range(20):
        weights = edges.normalise(torch.rand(1, edges.n_edges, dtype=dtype, generator=generator))
        combined = edges.combine(weights, messages[None])
        assert torch.isfinite(combined).all()


@pytest.mark.parametrize(("dtype", "value"), [(F32, 1e31), (F64, 1e301)], ids=["f32", "f64"])
@pytest.mark.parametrize("attackers", [3, 4])
def test_geometric_median_of_a_huge_constant_attack(dtype, value: float, attackers: int) -> None:
    edges = Neighbourhoods.from_graph(graphs.complete(7))
    psi = torch.linspace(-1, 1, 14, dtype=dtype).view(7, 2)
    psi[7 - attackers :] = value
    x = RuleInputs.sent(edges, psi)
    models = RULES.create("geometric-median", {"f": 3}).step(x, {})[0].models
    assert torch.isfinite(models).all()
    if attackers == 3:  # below the breakdown point: within reach of the honest points
        assert models.abs().max() < 2
    else:  # beyond it: the attackers' point, which a majority sent
        torch.testing.assert_close(models, torch.full_like(models, value))


def krum_case() -> RuleInputs:
    """Receiver 5 hears two non-finite messages (senders 0, 1) and three whose distances to each
    other and to its own model all overflow in float64 (senders 2, 3, 4)."""
    edges = Neighbourhoods.from_graph(graphs.complete(6))
    psi = torch.tensor(
        [[1, 1], [1, 1], [1e300, 1e300], [1.5e300, 1e300], [-1e300, -1e300], [1, 1]], dtype=F64
    )
    messages = psi.index_select(0, edges.senders)
    finite = (edges.senders >= 2) | edges.is_self
    messages = messages.masked_fill(~finite[:, None], 0.0)
    return RuleInputs(edges, messages, finite, False, psi, psi, None, 0)


def test_krum_ranks_messages_whose_distances_overflow() -> None:
    # scores at receiver 5 in units of 1e600 (f=0, two closest): self 4, sender 2 2.25,
    # sender 3 3.5, sender 4 10
    x = krum_case()
    out, _ = RULES.create("krum", {"f": 0}).step(x, {})
    assert out.models[5].tolist() == [1e300, 1e300]
    out, _ = RULES.create("multi-krum", {"f": 0, "m": 2}).step(x, {})
    torch.testing.assert_close(out.models[5], torch.tensor([1.25e300, 1e300], dtype=F64))
    mine = x.edges.receivers == 5
    assert out.weights[mine].tolist() == [0.0, 0.0, 0.5, 0.5, 0.0, 0.0]


def test_ubar_shortlists_the_nearer_of_two_messages_whose_distances_overflow() -> None:
    edges = Neighbourhoods.from_graph(graphs.complete(3))
    psi = torch.tensor([[0.0], [1.5e300], [1e300]], dtype=F64)
    x = RuleInputs.sent(edges, psi, losses=torch.zeros(edges.n_edges, dtype=F64))
    models = RULES.create("ubar", {"rho": 0.5}).step(x, {})[0].models
    assert models[0, 0] == 5e299  # psi_0 and the nearer sender 2, not sender 1


def test_distance_rule_weighs_underflowed_distances_equally() -> None:
    # the IPM attack with epsilon 1e-300 and nu 0.99: five attackers send w_k(i-1) + 1e-300,
    # whose accumulated distances underflow to 0
    edges = Neighbourhoods.from_graph(graphs.complete(7))
    rule = RULES.create("distance", {"nu": 0.99, "r0": 1e-300})
    state = rule.init_state(edges, F64)
    previous = torch.arange(14, dtype=F64).view(7, 2)
    attacked = (edges.senders >= 2) & ~edges.is_self
    for i in range(8):
        psi = previous + 0.5
        messages = psi.index_select(0, edges.senders)
        near = previous.index_select(0, edges.receivers) + 1e-300
        messages = torch.where(attacked[:, None], near, messages)
        x = RuleInputs(edges, messages, torch.ones_like(attacked), True, previous, psi, None, i)
        out, state = rule.step(x, state)
    assert (state.edges["g"][attacked] < torch.finfo(F64).tiny).all()
    mine = edges.receivers == 0
    weights = out.weights[mine]
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0, dtype=F64))
    assert (weights[2:] == weights[2]).all() and weights[2] > 0.19
    torch.testing.assert_close(out.models[0], previous[0], rtol=0.1, atol=0.1)


def test_loss_rule_weighs_scores_below_the_smallest_normal_float32_equally() -> None:
    edges = Neighbourhoods.from_graph(graphs.complete(6))
    rule = RULES.create("loss", {"r0": 1e-38})
    psi = torch.arange(6, dtype=F32)[:, None]
    x = RuleInputs.sent(edges, psi, losses=torch.zeros(edges.n_edges, dtype=F32))
    out, state = rule.step(x, rule.init_state(edges, F32))
    assert (state.edges["r"] < torch.finfo(F32).tiny).all()
    torch.testing.assert_close(out.weights, torch.full_like(out.weights, 1 / 6))
    torch.testing.assert_close(out.models, torch.full_like(psi, 2.5))


@pytest.mark.parametrize("name", ["loss", "hardened-loss"])
def test_an_agent_whose_own_score_is_infinite_keeps_only_itself(name: str) -> None:
    edges = Neighbourhoods.from_graph(graphs.complete(4))
    psi = torch.arange(8, dtype=F64).view(4, 2)
    losses = torch.ones(edges.n_edges, dtype=F64)
    losses[edges.self_edges[0]] = math.inf  # agent 0 scores its own model +inf
    rule = RULES.create(name)
    x = RuleInputs.sent(edges, psi, previous=psi + 1.0, losses=losses)  # a step: tau > 0
    out, _ = rule.step(x, rule.init_state(edges, F64))
    assert out.weights[edges.receivers == 0].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert torch.equal(out.models[0], psi[0])


def test_clipped_gossip_clips_a_message_whose_distance_overflows() -> None:
    edges = Neighbourhoods.from_graph(graphs.complete(2))
    psi = torch.tensor([[0.0, 0.0], [1e30, 1e30]], dtype=F32)  # ||v||^2 = 2e60 > float32 max
    models = RULES.create("clipped-gossip", {"tau": 1.0}).step(RuleInputs.sent(edges, psi), {})[0]
    expected = torch.full((2,), 0.5 / math.sqrt(2), dtype=F32)  # psi_0 + clip(v, 1) / 2
    torch.testing.assert_close(models.models[0], expected)


def test_hardened_rule_keeps_its_clipping_radius_through_a_step_that_overflows() -> None:
    edges = Neighbourhoods.from_graph(graphs.complete(2))
    rule = RULES.create("hardened-loss")
    state = rule.init_state(edges, F64)
    losses = torch.ones(edges.n_edges, dtype=F64)
    psi = torch.tensor([[0.0], [0.0]], dtype=F64)
    for previous in ([[1.0], [1.0]], [[1e200], [1.0]]):  # agent 0's second step overflows
        x = RuleInputs.sent(edges, psi, torch.tensor(previous, dtype=F64), losses)
        out, state = rule.step(x, state)
    assert torch.isfinite(state.agents["s"]).all()
    far = torch.tensor([[0.0], [100.0]], dtype=F64)  # then agent 1 sends a far model
    out, _ = rule.step(RuleInputs.sent(edges, far, far, losses), state)
    assert out.models[0, 0] <= 0.5  # moved by at most (1 - c_00) * tau_0 = 0.5 * 0.5 * 1
