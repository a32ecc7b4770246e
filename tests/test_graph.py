"""Graph builders: edge lists (receiver, sender) with self-loops, sorted by receiver."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from byzmtl import graph as graphs


def neighbourhoods(g: graphs.Graph) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {k: set() for k in range(g.n_agents)}
    for k, l in zip(g.receivers.tolist(), g.senders.tolist(), strict=True):
        out[k].add(l)
    return out


@given(st.integers(1, 40), st.floats(0.2, 2.0), st.integers(1, 12), st.integers(0, 1000))
def test_geometric_graph_matches_its_definition(n: int, radius: float, cap: int, seed: int) -> None:
    positions = np.random.default_rng(seed).uniform(0, 3, (n, 2))
    g = graphs.geometric(positions, radius, cap, seed)
    within = {
        k: {l for l in range(n) if np.linalg.norm(positions[k] - positions[l]) <= radius}
        for k in range(n)
    }
    for k, members in neighbourhoods(g).items():
        assert k in members
        assert members <= within[k]
        assert len(members) == min(cap, len(within[k]))


def test_geometric_cap_samples_and_may_be_asymmetric() -> None:
    positions = np.random.default_rng(0).uniform(0, 3, (100, 2))
    g = graphs.geometric(positions, 1.0, 10, seed=0)
    assert g.degrees.max() == 10
    nb = neighbourhoods(g)
    asymmetric = sum(1 for k in nb for l in nb[k] if k not in nb[l])
    assert asymmetric > 0
    other = graphs.geometric(positions, 1.0, 10, seed=1)
    assert not np.array_equal(g.senders, other.senders)


def test_geometric_scales_without_all_pairs() -> None:
    n = 200_000
    positions = np.random.default_rng(1).uniform(0, 3 * np.sqrt(n / 100), (n, 2))
    g = graphs.geometric(positions, 1.0, 10, seed=0)
    assert g.n_agents == n and 9 < g.degrees.mean() <= 10


def test_complete_ring_regular_erdos_renyi() -> None:
    assert graphs.complete(5).n_edges == 25
    ring = neighbourhoods(graphs.ring(6, hops=1))
    assert ring[0] == {5, 0, 1}
    assert set(graphs.k_regular(10, 3, seed=1).degrees) == {4}
    er = graphs.erdos_renyi(50, 0.2, seed=3)
    assert (er.degrees >= 1).all() and er.n_edges > 50
    with pytest.raises(graphs.GraphError, match="3-regular"):
        graphs.k_regular(5, 3, seed=0)


def test_networkx_and_edge_list_inputs(tmp_path) -> None:
    directed = nx.DiGraph([(0, 1), (1, 2)])
    nb = neighbourhoods(graphs.from_networkx(directed))
    assert nb[1] == {0, 1} and nb[0] == {0}  # 0 sends to 1: 1 hears 0
    path = tmp_path / "edges.txt"
    path.write_text("# u v\n0 1\n2 3\n")
    undirected = neighbourhoods(graphs.read_edge_list(path))
    assert undirected[1] == {0, 1} and undirected[3] == {2, 3}
    one_way = neighbourhoods(graphs.read_edge_list(path, directed=True))
    assert one_way[0] == {0}
    path.write_text("0 1 2\n")
    with pytest.raises(graphs.GraphError, match="two agent ids"):
        graphs.read_edge_list(path)


def test_graph_invariants_are_enforced() -> None:
    with pytest.raises(graphs.GraphError, match="self-loop"):
        graphs.Graph(2, np.array([0, 1]), np.array([1, 0]))
    with pytest.raises(graphs.GraphError, match=r"range|lie in"):
        graphs.from_edges(2, np.array([0]), np.array([5]))


def test_relabel_and_byzantine_choice() -> None:
    g = graphs.ring(5)
    perm = np.array([4, 3, 2, 1, 0])
    nb, relabelled = neighbourhoods(g), neighbourhoods(g.relabel(perm))
    for k in range(5):
        assert relabelled[perm[k]] == {perm[l] for l in nb[k]}
    chosen = graphs.choose_byzantine(100, 20, seed=0)
    assert len(set(chosen)) == 20 and chosen.max() < 100
    assert np.array_equal(chosen, graphs.choose_byzantine(100, 20, seed=0))
    assert not np.array_equal(chosen, graphs.choose_byzantine(100, 20, seed=1))
    with pytest.raises(graphs.GraphError):
        graphs.choose_byzantine(5, 6, seed=0)


def _kd_tree_pairs(positions: np.ndarray, radius: float) -> set[tuple[int, int]]:
    from scipy.spatial import cKDTree

    return {
        tuple(p) for p in cKDTree(positions).query_pairs(radius, output_type="ndarray").tolist()
    }


@given(
    st.integers(0, 120),
    st.floats(0.05, 3.0),
    st.integers(0, 10_000),
    st.sampled_from(["uniform", "grid", "duplicates"]),
)
def test_all_pairs_finds_the_k_d_tree_pairs(n: int, radius: float, seed: int, layout: str) -> None:
    generator = np.random.default_rng(seed)
    if layout == "uniform":
        positions = generator.uniform(0, 3, (n, 2))
    elif layout == "grid":  # distances exactly at the radius: ties decided the same way
        positions = generator.integers(0, 6, (n, 2)) * 0.5
        radius = float(generator.choice([0.5, 1.0, np.sqrt(0.5), 1.5]))
    else:
        positions = np.repeat(generator.uniform(0, 3, (max(n // 3, 1), 2)), 3, axis=0)[:n]
    positions = positions.reshape(-1, 2)
    assert n < graphs.ALL_PAIRS_BELOW
    found = graphs.close_pairs(positions, radius)
    assert {tuple(p) for p in found.tolist()} == _kd_tree_pairs(positions, radius)
    assert len(found) == len({tuple(p) for p in found.tolist()})
    assert (found[:, 0] < found[:, 1]).all()


def test_geometric_graph_is_the_same_either_side_of_the_all_pairs_size(monkeypatch) -> None:
    positions = np.random.default_rng(5).uniform(0, 3 * np.sqrt(5), (500, 2))
    small = graphs.geometric(positions, 1.0, 10, seed=3)
    monkeypatch.setattr(graphs, "ALL_PAIRS_BELOW", 10)  # the k-d tree for the same agents
    tree = graphs.geometric(positions, 1.0, 10, seed=3)
    assert np.array_equal(small.receivers, tree.receivers)
    assert np.array_equal(small.senders, tree.senders)
