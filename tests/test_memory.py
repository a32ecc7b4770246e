"""The memory-saving paths build the same things as the plain ones: the geometric graph in
blocks of receivers against all pairs at once, the engine's releasing join against torch.cat,
the uncached score floor against the cached one; and the bench's fit of peak memory recovers
bytes per agent and per edge from synthetic peaks."""

from __future__ import annotations

import platform

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from byzmtl import bench, rng
from byzmtl import graph as graphs
from byzmtl import neighbourhoods as nbh
from byzmtl.allocator import limit_heap_retention
from byzmtl.engine.simulation import Simulation, cat_releasing
from byzmtl.rules import RULES
from byzmtl.tasks.target_localization import TargetLocalization, TargetLocalizationSettings


def all_pairs_geometric(
    positions: np.ndarray, radius: float, max_neighbours: int | None, seed: int, keys: np.ndarray
) -> graphs.Graph:
    """The geometric graph as it was built before blocks: every pair within ``radius`` at
    once (``query_pairs``), all receivers sampled together."""
    n = len(positions)
    pairs = cKDTree(positions).query_pairs(radius, output_type="ndarray").astype(np.int64)
    receivers = np.concatenate([pairs[:, 0], pairs[:, 1]])
    senders = np.concatenate([pairs[:, 1], pairs[:, 0]])
    if max_neighbours is not None:
        priority = rng.uniform(seed, "neighbour-sampling", keys[receivers], keys[senders])[:, 0]
        order = np.argsort(receivers + priority)
        receivers, senders = receivers[order], senders[order]
        starts = np.searchsorted(receivers, receivers, side="left")
        keep = np.arange(len(receivers)) - starts < max_neighbours - 1
        receivers, senders = receivers[keep], senders[keep]
    return graphs.from_edges(n, receivers, senders, positions)


@pytest.mark.parametrize("block", [1, 7, 1 << 15])
@pytest.mark.parametrize(
    ("n", "seed", "cap", "radius"),
    [(1, 0, 10, 1.0), (2, 1, None, 5.0), (300, 0, 10, 1.0), (300, 5, 3, 1.5), (2000, 3, 10, 1.0),
     (2000, 4, None, 0.7), (2000, 9, 1, 1.0)],
)  # fmt: skip
@pytest.mark.parametrize("layout", ["uniform", "grid"])
def test_geometric_in_blocks_equals_all_pairs(
    monkeypatch, block, n, seed, cap, radius, layout
) -> None:
    monkeypatch.setattr(graphs, "ALL_PAIRS_BELOW", 0)  # the k-d tree, block by block
    monkeypatch.setattr(graphs, "_BLOCK_RECEIVERS", block)
    positions = 3.0 * np.sqrt(n / 100) * rng.uniform(seed, "position", rng.agent_keys(n), 0, 2)
    if layout == "grid":  # many distances exactly at the radius
        positions = np.round(positions * 2) / 2
    keys = np.random.default_rng(seed).permutation(n).astype(np.uint64)  # identities scattered
    built = graphs.geometric(positions, radius, cap, seed, keys)
    reference = all_pairs_geometric(positions, radius, cap, seed, keys)
    assert built.receivers.dtype == reference.receivers.dtype == np.int64
    assert np.array_equal(built.receivers, reference.receivers)
    assert np.array_equal(built.senders, reference.senders)
    assert built.n_edges > n or cap == 1 or n <= 2


def test_geometric_in_blocks_across_the_real_block_size() -> None:
    """More agents than one block (2^15), in the spatial order the case study uses."""
    settings = TargetLocalizationSettings(agents=40_000, iterations=1)
    case = TargetLocalization.from_settings(settings, seed=1)
    built = graphs.geometric(case.positions, 1.0, 10, 1, case.keys)
    reference = all_pairs_geometric(case.positions, 1.0, 10, 1, case.keys)
    assert np.array_equal(built.receivers, reference.receivers)
    assert np.array_equal(built.senders, reference.senders)
    assert 9 * 40_000 < built.n_edges <= 10 * 40_000


def test_cat_releasing_is_torch_cat_and_empties_the_list() -> None:
    pieces = [torch.arange(6.0).view(2, 3), torch.arange(9.0).view(3, 3) * 2]
    expected = torch.cat(pieces)
    assert torch.equal(cat_releasing(pieces), expected) and pieces == []
    columns = [torch.ones(2, 1, 2), torch.zeros(2, 3, 2)]
    expected = torch.cat(columns, 1)
    assert torch.equal(cat_releasing(columns, 1), expected) and columns == []
    mixed = [torch.ones(2, dtype=torch.float32), torch.ones(1, dtype=torch.float64)]
    assert cat_releasing(mixed).dtype == torch.float64  # promoted as torch.cat does
    with pytest.raises(RuntimeError):  # shapes torch.cat refuses are refused, not broadcast
        cat_releasing([torch.ones(2, 3), torch.ones(2, 1)])


def test_uncached_score_floor_changes_no_round(monkeypatch) -> None:
    settings = TargetLocalizationSettings(agents=80, iterations=15)
    task = TargetLocalization.from_settings(settings, seed=3)
    graph = graphs.geometric(task.positions, 1.0, 10, 3, task.keys)

    def run() -> torch.Tensor:
        rules = [RULES.create(name) for name in ("loss", "distance", "average")]
        simulation = Simulation(task, graph, rules, None, [], 3, task.keys, shard_edges=300)
        assert len(simulation.shards) > 2
        return simulation.run().models

    cached = run()
    monkeypatch.setattr(nbh, "_CACHED_EDGES", 0)
    assert torch.equal(run(), cached)


def point(agents: int, edges: int, a: float, b: float, c: float) -> dict[str, float]:
    return {"agents": agents, "edges": edges, "peak_memory_gb": (a * agents + b * edges + c) / 1e9}


def test_fit_memory_recovers_bytes_per_agent_and_per_edge() -> None:
    a, b, c = 110.0, 52.5, 0.4e9
    points = [point(10**5, 10**6, a, b, c), point(10**6, 10**7, a, b, c)]
    points.append(point(10**6, 5 * 10**6, a, b, c))
    fit = bench.fit_memory(points)
    assert fit is not None
    assert fit["bytes_per_agent"] == pytest.approx(a, rel=1e-9)
    assert fit["bytes_per_edge"] == pytest.approx(b, rel=1e-9)
    assert fit["base_gb"] == pytest.approx(0.4, rel=1e-9)
    assert fit["worst_error_gb"] < 1e-9
    assert bench.predicted_peak_gb(fit, 10**7, 10**8) == pytest.approx(
        (a * 1e7 + b * 1e8 + c) / 1e9, rel=1e-9
    )
    noisy = [dict(p) for p in points] + [point(3 * 10**5, 3 * 10**6, a, b, c + 0.01e9)]
    rough = bench.fit_memory(noisy)
    assert rough is not None and 0.002 < rough["worst_error_gb"] < 0.01


def test_fit_memory_refuses_what_the_points_do_not_determine() -> None:
    a, b, c = 110.0, 52.5, 0.4e9
    assert bench.fit_memory([point(10**5, 10**6, a, b, c), point(10**6, 10**7, a, b, c)]) is None
    proportional = [point(n, 10 * n, a, b, c) for n in (10**4, 10**5, 10**6)]
    assert bench.fit_memory(proportional) is None  # edges = 10 agents: a, b not separable


def test_scaling_table_reports_the_fit() -> None:
    a, b, c = 110.0, 52.5, 0.4e9
    points = [point(10**5, 10**6, a, b, c), point(10**6, 10**7, a, b, c)]
    points.append({**point(10**6, 5 * 10**6, a, b, c), "neighbours": 5})
    for p in points:
        p.update(build_seconds=1.0, seconds_per_round=0.5)
    results = {"load_average": (1.0, 1.0, 1.0), "cpus": 2, "scaling": points}
    results["memory_fit"] = bench.fit_memory(points)
    text = bench.table(results)
    assert "110 B/agent x agents + 52.5 B/edge x edges + 0.40 GB" in text
    assert " 5 " in text.splitlines()[-2]  # the 5-neighbour point is marked


def test_heap_retention_limit_is_set_where_the_c_library_is_glibc() -> None:
    assert limit_heap_retention() is (platform.libc_ver()[0] == "glibc")
