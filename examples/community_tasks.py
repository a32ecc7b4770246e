"""One task per community: a stochastic block model whose communities each locate their own
target (a few seconds).

    python examples/community_tasks.py

Six communities of 50 agents, densely connected inside and sparsely between, are the nodes of a
networkx graph; each node's attribute ``group`` names its community's target, so node k of the
graph is agent k and seeks the target of its community. Thirty agents are Byzantine. The
loss-based rule lets every agent learn with the agents of its own community (whom it does not
know) and shrugs off the attackers; averaging mixes the communities' targets.
"""

from __future__ import annotations

import networkx as nx
import numpy as np

import byzmtl

COMMUNITIES, SIZE = 6, 50


def community_graph(seed: int = 0) -> nx.Graph:
    """The stochastic block model, each node's ``group`` set to its community's target."""
    inside, between = 0.2, 0.005
    p = np.full((COMMUNITIES, COMMUNITIES), between) + (inside - between) * np.eye(COMMUNITIES)
    graph = nx.stochastic_block_model([SIZE] * COMMUNITIES, p.tolist(), seed=seed)
    for _, data in graph.nodes(data=True):
        data["group"] = f"target-{data['block']}"
    return graph


def main() -> dict[str, float]:
    graph = community_graph()
    targets = [[10.0 * (1 + c % 3), 10.0 * (1 + c // 3)] for c in range(COMMUNITIES)]
    result = byzmtl.run(
        {
            "case": "target-localization",
            "rules": ["loss", "average", "none"],
            "attackers": 30,
            "seed": 0,
            "task": {"agents": COMMUNITIES * SIZE, "iterations": 300, "targets": targets},
        },
        graph=graph,
    )
    # every agent seeks the target of its own community
    blocks = [graph.nodes[k]["block"] for k in range(graph.number_of_nodes())]
    assert result.summary["agent_groups"] == [f"target-{b}" for b in blocks]
    finals = {rule: result.final(rule, "msd") for rule in result.config.rules}
    for rule, msd in finals.items():
        print(f"{rule:8s} mean squared distance to the own target: {msd:10.4f}")
    return finals


if __name__ == "__main__":
    main()
