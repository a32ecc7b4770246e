"""The pieces of a partitioned run (byzmtl.engine.partition), without a process group: how the
agents are cut, each rank's table and exchange plan, the restricted task, the per-receiver weight
sums. That P ranks give the one-process results is tests/test_distributed.py's."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from byzmtl import graph as graphs
from byzmtl.engine.partition import Halo, agent_bounds, can_partition
from byzmtl.recording import WeightSums
from byzmtl.tasks.target_localization import TargetLocalization, TargetLocalizationSettings

PROBABILITIES = st.sampled_from([0.0, 0.05, 0.1, 0.2, 0.4, 0.6])  # networkx fails on tiny p


def _graph(n: int, p: float, seed: int) -> graphs.Graph:
    return graphs.erdos_renyi(n, p, seed)


@given(st.integers(2, 60), PROBABILITIES, st.integers(0, 50), st.integers(1, 6))
@settings(max_examples=60, deadline=None)
def test_ranks_own_contiguous_ranges_and_every_table_holds_what_its_edges_need(
    n: int, p: float, seed: int, world: int
) -> None:
    graph = _graph(n, p, seed)
    bounds = agent_bounds(graph.degrees, world)
    assert bounds[0] == 0 and bounds[-1] == n and (np.diff(bounds) >= 0).all()
    halos = [Halo.of(graph, r, world, torch.device("cpu")) for r in range(world)]
    for r, halo in enumerate(halos):
        assert (halo.agents.start, halo.agents.stop) == (bounds[r], bounds[r + 1])
        senders = graph.senders[halo.edge_range]
        assert (graph.receivers[halo.edge_range] >= halo.agents.start).all()
        assert (graph.receivers[halo.edge_range] < halo.agents.stop).all()
        assert (np.diff(halo.table) > 0).all()  # increasing: senders keep their order
        assert set(senders) | set(range(halo.agents.start, halo.agents.stop)) == set(halo.table)
        own_rows = halo.table[halo.own]
        assert (own_rows == np.arange(halo.agents.start, halo.agents.stop)).all()
        for q in range(world):  # what r sends q is what q receives from r
            assert halo.sent[q] == halos[q].received[r]
        assert halo.sent[r] == halo.received[r] == 0
    assert sum(len(range(n)[h.agents]) for h in halos) == n


@given(st.integers(0, 1000), st.integers(5, 40), st.integers(1, 5))
@settings(max_examples=25, deadline=None)
def test_a_restricted_target_localization_is_the_whole_ones_rows(
    seed: int, n: int, world: int
) -> None:
    """Batches (generated in chunks of another size), steps, losses, metrics and initial models
    of a range of agents are bit for bit the whole case study's rows."""
    settings_ = TargetLocalizationSettings(agents=n, iterations=7)
    whole = TargetLocalization.from_settings(settings_, seed)
    first, last = n * (world - 1) // world, n
    part = whole.restricted(np.arange(first, last))
    assert torch.equal(part.init_models(2), whole.init_models(2)[:, first:last])
    models = whole.init_models(2)
    for i in (0, 3, 6):
        full, mine = whole.batch(i), part.batch(i)
        for a, b in zip(full, mine, strict=True):
            assert torch.equal(a[first:last], b)
        psi = whole.adapt(models, full, {}, i)[0]
        assert torch.equal(part.adapt(models[:, first:last], mine, {}, i)[0], psi[:, first:last])
        for key, value in whole.metrics(psi, full, i).items():
            assert torch.equal(part.metrics(psi[:, first:last], mine, i)[key], value[:, first:last])
        receivers = torch.arange(last - first)
        assert torch.equal(
            part.edge_losses(psi[:, first:last], receivers, mine),
            whole.edge_losses(psi[:, first:last], receivers + first, full),
        )


@given(st.integers(2, 50), PROBABILITIES, st.integers(0, 50), st.integers(1, 5))
@settings(max_examples=40, deadline=None)
def test_a_ranks_weight_sums_are_the_whole_graphs_rows(
    n: int, p: float, seed: int, world: int
) -> None:
    graph = _graph(n, p, seed)
    rng = np.random.default_rng(seed)
    normal = rng.random(n) < 0.7
    groups = rng.integers(0, 3, n)
    weights = torch.as_tensor(rng.random((2, 3, graph.n_edges)))
    whole = WeightSums(graph.receivers, graph.senders, normal, groups, slice(0, n))(weights)
    for r in range(world):
        halo = Halo.of(graph, r, world, torch.device("cpu"))
        edges = halo.edge_range
        sums = WeightSums(graph.receivers[edges], graph.senders[edges], normal, groups, halo.agents)
        assert torch.equal(sums(weights[:, :, edges]), whole[..., halo.agents])


def test_only_sparse_graphs_of_a_restrictable_task_under_a_local_attack_are_partitioned() -> None:
    from byzmtl.attacks import ATTACKS

    task = TargetLocalization.from_settings(TargetLocalizationSettings(agents=40), 0)
    sparse, dense = graphs.ring(40, 2), graphs.complete(40)
    constant, mimic = ATTACKS.create("constant", {}), ATTACKS.create("mimic", {})
    some = np.array([3, 17])
    assert can_partition(task, sparse, constant, some, 2)
    assert not can_partition(task, sparse, constant, some, 1)  # one process
    assert not can_partition(task, dense, constant, some, 2)  # dense shards sum over all
    assert not can_partition(task, sparse, mimic, some, 2)  # mimic reads one agent for all
    assert can_partition(task, sparse, mimic, np.array([], dtype=np.int64), 2)  # nobody attacks
    assert not can_partition(task, sparse, constant, some, 41)  # a rank without agents
    assert not can_partition(object(), sparse, constant, some, 2)  # type: ignore[arg-type]
