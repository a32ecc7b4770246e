"""The pieces of a partitioned run (byzmtl.engine.partition), without a process group: how the
agents are cut, each rank's table and exchange plan, the restricted task, the per-receiver weight
sums. That P ranks give the one-process results is tests/test_distributed.py's."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from byzmtl import graph as graphs
from byzmtl import graph_part, rng
from byzmtl.attacks import ATTACKS
from byzmtl.attacks.base import Attack, AttackAssumptionError, AttackInputs
from byzmtl.engine.partition import Halo, agent_bounds, can_partition, halo_agents
from byzmtl.experiment import own_case
from byzmtl.graph_part import GraphPart, drawn_edges
from byzmtl.recording import WeightSums
from byzmtl.tasks.target_localization import TargetLocalization, TargetLocalizationSettings

PROBABILITIES = st.sampled_from([0.0, 0.05, 0.1, 0.2, 0.4, 0.6])  # networkx fails on tiny p


def _graph(n: int, p: float, seed: int) -> graphs.Graph:
    return graphs.erdos_renyi(n, p, seed)


@given(st.integers(2, 60), PROBABILITIES, st.integers(0, 50), st.integers(1, 6), st.integers(0, 59))
@settings(max_examples=60, deadline=None)
def test_ranks_own_contiguous_ranges_and_every_table_holds_what_its_edges_need(
    n: int, p: float, seed: int, world: int, copied: int
) -> None:
    """Every rank's table: its agents, its edges' senders and the agent the attack reads
    beyond their neighbourhoods (mimic's copied agent), increasing; what each rank sends
    another is what that one receives."""
    graph = _graph(n, p, seed)
    bounds = agent_bounds(graph.degrees, world)
    assert bounds[0] == 0 and bounds[-1] == n and (np.diff(bounds) >= 0).all()
    parts = [GraphPart.of(graph, slice(bounds[r], bounds[r + 1])) for r in range(world)]
    copied %= n
    byzantine = np.arange(n) == (copied + 1) % n
    mimic = ATTACKS.create("mimic", {"agent": copied})
    outside = [halo_agents(part, mimic, byzantine) for part in parts]
    outlines = [part.outline(bounds) for part in parts]
    halos = [Halo.of(outlines[r], r, outside, torch.device("cpu")) for r in range(world)]
    for r, halo in enumerate(halos):
        assert (halo.agents.start, halo.agents.stop) == (bounds[r], bounds[r + 1])
        senders = graph.senders[halo.edge_range]
        assert (graph.receivers[halo.edge_range] >= halo.agents.start).all()
        assert (graph.receivers[halo.edge_range] < halo.agents.stop).all()
        assert (np.diff(halo.table) > 0).all()  # increasing: senders keep their order
        own = set(range(halo.agents.start, halo.agents.stop))
        assert set(senders) | own | {copied} == set(halo.table)
        own_rows = halo.table[halo.own]
        assert (own_rows == np.arange(halo.agents.start, halo.agents.stop)).all()
        for q in range(world):  # what r sends q is what q receives from r
            assert halo.sent[q] == halos[q].received[r]
        assert halo.sent[r] == halo.received[r] == 0
        outline = parts[r].outline(bounds)  # what a rank keeps once its engine holds the edges
        assert outline.n_own_edges == len(parts[r].receivers) == len(senders)
        assert outline.n_edges == graph.n_edges and outline.agents == parts[r].agents
        assert outline.agent_cuts == tuple(bounds)
        firsts = np.searchsorted(graph.receivers, bounds)  # each range's first edge
        assert outline.edge_cuts == tuple(firsts) and halo.edge_range.start == firsts[r]
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


def test_a_rank_keeps_its_restricted_case_study_and_refuses_anything_else() -> None:
    whole = TargetLocalization.from_settings(TargetLocalizationSettings(agents=6), 0)
    part = whole.restricted(np.arange(2, 4))
    assert own_case(whole, part) is part and part.n_agents == 2
    message = r"^TargetLocalization\.restricted returned a Task, not a case study$"
    with pytest.raises(TypeError, match=message):
        own_case(whole, type("Task", (), {})())


def _summed(graph: graphs.Graph, normal: np.ndarray, groups: np.ndarray, w: Any) -> np.ndarray:
    """(2, N) b_k and o_k of one rule's weights (None: NaN where k has an edge in the sum),
    summed edge by edge, in edge order."""
    sums = np.zeros((2, graph.n_agents))
    for e, (k, l) in enumerate(zip(graph.receivers, graph.senders, strict=True)):
        if not normal[k]:
            continue
        s = 0 if not normal[l] else 1 if groups[l] == groups[k] else None
        if s is not None:
            sums[s, k] = np.nan if w is None else sums[s, k] + float(w[e])
    return sums


@given(st.integers(2, 50), PROBABILITIES, st.integers(0, 50), st.integers(1, 5))
@settings(max_examples=40, deadline=None)
def test_a_ranks_weight_sums_are_the_whole_graphs_rows(
    n: int, p: float, seed: int, world: int
) -> None:
    """Two rounds of three rules, one without weights in the second round: the sums, made edge
    by edge, and a rank's are the whole graph's rows of its receivers."""
    graph = _graph(n, p, seed)
    rng = np.random.default_rng(seed)
    normal = rng.random(n) < 0.7
    groups = rng.integers(0, 3, n)
    values = torch.as_tensor(rng.random((2, 3, graph.n_edges)))
    block: list[list[torch.Tensor | None]] = [list(values[0]), [values[1, 0], None, values[1, 2]]]
    sums_of = WeightSums(graph.receivers, graph.senders, normal, groups, slice(0, n))
    whole = sums_of.of_rounds(block)
    assert whole is not None and whole.shape == (2, 3, 2, n)
    assert sums_of.of_rounds([[None, None]]) is None
    for k, rules in enumerate(block):  # one round alone (no stacked copy): the same sums
        alone = sums_of.of_round(rules)
        assert alone is not None
        assert torch.equal(alone.nan_to_num(-1.0), whole[k].nan_to_num(-1.0)), k
        for r, w in enumerate(rules):
            expected = _summed(graph, normal, groups, None if w is None else w.numpy())
            assert np.array_equal(whole[k, r].numpy(), expected, equal_nan=True), (k, r)
    bounds, offsets = agent_bounds(graph.degrees, world), graph.offsets
    for r in range(world):
        part = GraphPart.of(graph, slice(bounds[r], bounds[r + 1]))
        edges = slice(offsets[bounds[r]], offsets[bounds[r + 1]])
        sums = WeightSums(part.receivers, part.senders, normal, groups, part.agents)
        cut = [[None if w is None else w[edges] for w in rules] for rules in block]
        mine = sums.of_rounds(cut)
        assert mine is not None
        assert torch.equal(mine.nan_to_num(-1.0), whole[..., part.agents].nan_to_num(-1.0))


@dataclass
class Statistic(Attack):
    """Sends the mean of every agent's model: it reads the whole network."""

    trains: bool = True

    def messages(self, x: AttackInputs) -> torch.Tensor:
        return x.psi.mean(1, keepdim=True).expand(-1, len(x.senders), -1)


def test_an_attack_reading_an_agent_outside_the_network_is_a_one_line_error() -> None:
    graph = graphs.ring(10, 1)
    part = GraphPart.of(graph, slice(0, 5))
    byzantine = np.arange(10) == 3

    class Beyond(Statistic):
        def reads(self, byzantine: np.ndarray) -> np.ndarray:
            return np.array([2, 10])

    with pytest.raises(
        AttackAssumptionError, match=r"^Beyond: reads\(\) names agent 10, not in \[0, 10\)$"
    ):
        halo_agents(part, Beyond(), byzantine)
    assert list(halo_agents(part, Statistic(), byzantine)) == [5, 9]  # its edges' senders
    far, near = (ATTACKS.create("mimic", {"agent": a}) for a in (7, 2))
    assert list(halo_agents(part, far, byzantine)) == [5, 7, 9]
    assert list(halo_agents(part, near, byzantine)) == [5, 9]  # its own agent


def test_only_sparse_graphs_of_a_restrictable_task_under_a_local_attack_are_partitioned() -> None:
    task = TargetLocalization.from_settings(TargetLocalizationSettings(agents=40), 0)
    sparse, dense = graphs.ring(40, 2), graphs.complete(40)
    constant, mimic = ATTACKS.create("constant", {}), ATTACKS.create("mimic", {})
    some = np.array([3, 17])
    assert can_partition(task, sparse, constant, some, 2)
    assert not can_partition(task, sparse, constant, some, 1)  # one process
    assert not can_partition(task, dense, constant, some, 2)  # dense shards sum over all
    assert can_partition(task, sparse, mimic, some, 2)  # its copied agent joins every table
    assert not can_partition(task, sparse, Statistic(), some, 2)  # reads the whole network
    assert can_partition(task, sparse, Statistic(), np.array([], dtype=np.int64), 2)  # nobody
    assert not can_partition(task, sparse, constant, some, 41)  # a rank without agents
    assert not can_partition(object(), sparse, constant, some, 2)  # type: ignore[arg-type]


@given(
    st.integers(0, 1000),
    st.sampled_from([60, 400, 900]),
    st.sampled_from([None, 3, 6]),
    st.integers(1, 4),
    st.sampled_from([16, 64, 1 << 15]),
)
@settings(max_examples=30, deadline=None)
def test_a_geometric_graph_built_per_range_of_receivers_is_the_whole_graphs_part(
    seed: int, n: int, cap: int | None, world: int, block: int
) -> None:
    """Every range's edges (k-d tree blocks of any size, ranges cut anywhere) are the whole
    graph's, so a rank never needs the whole graph; and the ranks' ranges, built from an even
    share and the gathered degrees as :func:`built_part` does, give the whole edge list."""
    positions = 3.0 * np.sqrt(n / 100.0) * rng.uniform(seed, "position", rng.agent_keys(n), 0, 2)
    keys = rng.agent_keys(n)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(graphs, "ALL_PAIRS_BELOW", 50)  # the k-d tree's blocks
        patch.setattr(graphs, "_BLOCK_RECEIVERS", block)
        whole = graphs.geometric(positions, 1.0, cap, seed, keys)
        every = whole.receivers * n + whole.senders
        cuts = np.sort(np.random.default_rng(seed).integers(0, n + 1, world - 1))
        bounds = np.concatenate([[0], cuts, [n]])
        pieces = [
            graphs.geometric_keys(positions, 1.0, cap, seed, keys, slice(a, b))
            for a, b in itertools.pairwise(bounds)
        ]
    assert np.array_equal(np.concatenate(pieces), every)


@given(st.integers(2, 60), PROBABILITIES, st.integers(0, 50), st.integers(1, 5), st.booleans())
@settings(max_examples=40, deadline=None)
def test_the_network_figure_of_the_ranks_parts_is_the_whole_graphs(
    n: int, p: float, seed: int, world: int, directed: bool
) -> None:
    """Links, their number, whether the graph is directed and the drawn agents' positions,
    reduced from the parts, are the whole graph's (a directed graph: a random half of an
    undirected one's arcs; at most 10 agents drawn, so that larger graphs are sampled)."""
    from byzmtl.plots import network_of

    graph = _graph(n, p, seed)
    keep = np.ones(graph.n_edges, bool)
    if directed:
        keep = (graph.receivers == graph.senders) | (
            np.random.default_rng(seed).random(graph.n_edges) < 0.5
        )
    positions = np.random.default_rng(seed).random((n, 2))
    graph = graphs.Graph(n, graph.receivers[keep], graph.senders[keep], positions)
    bounds = agent_bounds(graph.degrees, world)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(graph_part, "_CHUNK_EDGES", 7)  # edges read in several chunks
        patch.setattr(graph_part, "MAX_DRAWN_AGENTS", 10)
        pieces = [
            GraphPart.of(graph, slice(a, b)).drawn_piece() for a, b in itertools.pairwise(bounds)
        ]
        groups, byzantine = np.arange(n) % 3, np.arange(0, n, 7)
        drawn = drawn_edges(n, pieces, positions)
        from_parts = network_of(drawn, groups, ["a", "b", "c"], byzantine)
        whole = network_of(graph, groups, ["a", "b", "c"], byzantine)
    assert len(whole.agents) == min(n, 10) and drawn.positions is not None
    assert len(drawn.positions) == len(whole.agents)  # a rank keeps the drawn agents' only
    assert np.array_equal(whole.positions, positions[whole.agents])
    for name, value in vars(whole).items():
        assert np.array_equal(getattr(from_parts, name), value), name
    arcs = set(zip(graph.receivers.tolist(), graph.senders.tolist(), strict=True))
    assert whole.directed == any((s, r) not in arcs for r, s in arcs)
