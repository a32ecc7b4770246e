"""A user's graph decides who is who: its node ids are the agent ids everywhere (groups,
Byzantine agents, results), and each agent's task group is explicit and settable."""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

import byzmtl
from byzmtl import graph as graphs
from byzmtl.cli import main
from byzmtl.config import ConfigError, parse, read_toml
from byzmtl.experiment import prepare

TARGETS = [[10.0, 10.0], [30.0, 10.0], [10.0, 30.0]]


def communities(seed: int = 0) -> nx.Graph:
    """Three communities of 12 agents, nodes inserted in shuffled order (so that networkx's node
    order is not the id order)."""
    sbm = nx.stochastic_block_model([12] * 3, [[0.6, 0.02, 0.02], [0.02, 0.6, 0.02],
                                              [0.02, 0.02, 0.6]], seed=seed)  # fmt: skip
    shuffled = nx.Graph()
    order = np.random.default_rng(seed).permutation(36)
    for k in order:
        shuffled.add_node(int(k), group=f"target-{sbm.nodes[int(k)]['block']}")
    shuffled.add_edges_from(sbm.edges)
    return shuffled


def tl(agents: int, **task: object) -> dict:
    return {"case": "target-localization", "rules": ["loss", "none"],
            "task": {"agents": agents, "iterations": 40, "targets": TARGETS, **task}}  # fmt: skip


def test_node_ids_and_group_attributes_of_a_networkx_graph_are_the_agents() -> None:
    graph = communities()
    experiment = prepare(tl(36), graph=graph)
    case = experiment.case
    for k in range(36):
        block = int(graph.nodes[k]["group"].split("-")[1])
        np.testing.assert_allclose(case.goal[k], case.targets[block])  # k seeks its own target
        heard = set(experiment.graph.senders[experiment.graph.receivers == k].tolist())
        assert heard == {k, *graph.neighbors(k)}
    result = byzmtl.run(experiment)
    assert result.summary["agent_groups"] == [graph.nodes[k]["group"] for k in range(36)]


def test_an_edge_list_and_a_groups_file_through_the_command_line(tmp_path: Path) -> None:
    graph = communities(1)
    edges = tmp_path / "sbm.edgelist"
    nx.write_edgelist(graph, edges, data=False)
    groups = tmp_path / "groups.txt"
    groups.write_text("".join(graph.nodes[k]["group"] + "\n" for k in range(36)))
    out = tmp_path / "run"
    argv = ["run", "target-localization", "--agents", "36", "--iterations", "30",
            "--graph", "edgelist", "--set", f"graph.path={edges}", "--set",
            f"task.groups={json.dumps(str(groups))}", "--set", f"task.targets={TARGETS}",
            "--byzantine", "3,20", "--rules", "loss,none", "--out", str(out), "--quiet",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["byzantine"] == [3, 20]
    assert summary["agent_groups"] == [graph.nodes[k]["group"] for k in range(36)]
    experiment = prepare(parse(read_toml(out / "config.toml")))  # config.toml reruns it
    expected = graphs.from_networkx(graph)
    assert np.array_equal(experiment.graph.receivers, expected.receivers)
    assert np.array_equal(experiment.graph.senders, expected.senders)
    assert [experiment.case.group_names[g] for g in experiment.case.groups] == [
        graph.nodes[k]["group"] for k in range(36)
    ]


def test_a_graphml_file_carries_the_groups(tmp_path: Path) -> None:
    path = tmp_path / "g.graphml"
    nx.write_graphml(communities(2), path)
    config = tl(36)
    config["graph"] = {"kind": "graphml", "path": str(path)}
    experiment = prepare(config)
    expected = [communities(2).nodes[k]["group"] for k in range(36)]
    assert [experiment.case.group_names[g] for g in experiment.case.groups] == expected
    # the resolved configuration holds the groups it used, and reruns to the same assignment
    again = prepare(experiment.config)
    assert np.array_equal(again.case.groups, experiment.case.groups)


def test_groups_by_index_list_and_byzantine_ids_are_by_agent_id() -> None:
    groups = [k % 3 for k in range(30)]
    experiment = prepare({**tl(30, groups=groups), "byzantine": [0, 29]})
    assert experiment.case.groups.tolist() == groups
    assert experiment.byzantine.tolist() == [0, 29]
    assert not experiment.normal[[0, 29]].any() and experiment.normal[1:29].all()


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ([0, 1], r"task.groups: 2 groups for 30 agents"),
        (["target-0"] * 29 + ["target-9"], r"task.groups: agent 29 has unknown group 'target-9'"),
        ([0] * 29 + [3], r"agent 29 has unknown group 3"),
        ("/nonexistent/groups.txt", r"task.groups: cannot read /nonexistent/groups.txt"),
    ],
)
def test_wrong_groups_are_one_line_errors(groups: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        prepare(tl(30, groups=groups))


def test_networkx_nodes_must_be_the_agent_ids() -> None:
    with pytest.raises(ConfigError, match=r"nodes of a networkx graph must be the agent ids"):
        prepare(tl(3), graph=nx.path_graph(["a", "b", "c"]))
    with pytest.raises(ConfigError, match=r"the graph has 36 nodes, the case has 30 agents"):
        prepare(tl(30), graph=nx.path_graph(36))


def test_groups_cannot_come_from_two_places_or_for_a_case_that_fixes_them() -> None:
    with pytest.raises(ConfigError, match=r"task.groups: the graph's node attribute"):
        prepare(tl(36, groups=[0] * 36), graph=communities())
    config = {"case": "har", "task": {"data_dir": "/nonexistent"}}
    with pytest.raises(ConfigError, match=r"the har case study fixes them"):
        prepare(config, graph=communities())


def test_a_networkx_kind_in_a_file_says_how_to_give_the_graph() -> None:
    with pytest.raises(ConfigError, match=r"networkx.write_graphml"):
        prepare({**tl(30), "graph": {"kind": "networkx"}})


def test_an_empty_directed_edge_list_leaves_every_agent_alone(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("# no edges\n")
    graph = graphs.read_edge_list(path, 4, directed=True)
    assert graph.n_edges == 4 and graph.receivers.tolist() == [0, 1, 2, 3]
    with pytest.raises(graphs.GraphError, match="is empty"):
        graphs.read_edge_list(path, directed=True)
    path.write_text("0 7\n")
    with pytest.raises(graphs.GraphError, match="names agent 7, but there are 4 agents"):
        graphs.read_edge_list(path, 4)
