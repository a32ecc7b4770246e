"""Communication graphs as edge lists (receiver, sender), self-loops included.

Agent k's neighbourhood N_k is the set of senders of the edges whose receiver is k; it always
contains k itself. Graphs may be directed: l in N_k does not imply k in N_l. Edges are kept
sorted by (receiver, sender), so each neighbourhood is one contiguous slice of the edge list.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from xml.etree.ElementTree import ParseError

import numpy as np

from byzmtl import rng

if TYPE_CHECKING:  # networkx and scipy are imported where used: most runs need neither
    import networkx as nx
    from scipy.spatial import cKDTree

ALL_PAIRS_BELOW = 2048
"""Agents below which :func:`geometric` compares all pairs instead of building a k-d tree
(the same edges; at the paper's 100 agents it saves importing scipy, a third of a second)."""


class GraphError(ValueError):
    """A graph specification that cannot be built."""


@dataclass(frozen=True)
class Graph:
    """A directed communication graph: edge e carries a message from ``senders[e]`` to
    ``receivers[e]``. Construct with the builders below; they sort, deduplicate and add self-loops.
    """

    n_agents: int
    receivers: np.ndarray
    senders: np.ndarray
    positions: np.ndarray | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        r, s = self.receivers, self.senders
        if r.shape != s.shape or r.ndim != 1:
            raise GraphError("receivers and senders must be 1-d arrays of equal length")
        if len(r) and (r.min() < 0 or s.min() < 0 or max(r.max(), s.max()) >= self.n_agents):
            raise GraphError(f"agent ids must lie in [0, {self.n_agents})")
        order_key = r.astype(np.int64) * self.n_agents + s
        if np.any(np.diff(order_key) <= 0):
            raise GraphError("edges must be sorted by (receiver, sender) without duplicates")
        if np.count_nonzero(r == s) != self.n_agents:
            raise GraphError("every agent needs exactly one self-loop")

    @property
    def n_edges(self) -> int:
        return len(self.receivers)

    @property
    def degrees(self) -> np.ndarray:
        """|N_k| for every agent k (self included)."""
        return np.bincount(self.receivers, minlength=self.n_agents)

    @property
    def self_edges(self) -> np.ndarray:
        """Index of agent k's self-loop edge, for every k."""
        return np.flatnonzero(self.receivers == self.senders)

    @property
    def offsets(self) -> np.ndarray:
        """CSR offsets: the edges of receiver k are ``offsets[k]:offsets[k+1]``."""
        return np.concatenate([[0], np.cumsum(self.degrees)])

    def relabel(self, permutation: np.ndarray) -> Graph:
        """The same graph with agent k renamed ``permutation[k]``."""
        perm = np.asarray(permutation)
        positions = None
        if self.positions is not None:
            positions = np.empty_like(self.positions)
            positions[perm] = self.positions
        return from_edges(self.n_agents, perm[self.receivers], perm[self.senders], positions)

    def to_networkx(self) -> nx.DiGraph:
        """A networkx DiGraph with an arc sender -> receiver per edge, self-loops left out."""
        import networkx as nx

        graph = nx.DiGraph()
        graph.add_nodes_from(range(self.n_agents))
        keep = self.receivers != self.senders
        graph.add_edges_from(
            zip(self.senders[keep].tolist(), self.receivers[keep].tolist(), strict=True)
        )
        return graph


def from_edges(
    n_agents: int,
    receivers: np.ndarray,
    senders: np.ndarray,
    positions: np.ndarray | None = None,
) -> Graph:
    """A graph from (receiver, sender) pairs: duplicates merged, self-loops added, sorted."""
    r = np.concatenate([np.asarray(receivers, dtype=np.int64), np.arange(n_agents)])
    s = np.concatenate([np.asarray(senders, dtype=np.int64), np.arange(n_agents)])
    if len(r) and (min(r.min(), s.min()) < 0 or max(r.max(), s.max()) >= n_agents):
        raise GraphError(f"edge endpoints must lie in [0, {n_agents})")
    key = np.unique(r * n_agents + s)
    return Graph(n_agents, key // n_agents, key % n_agents, positions)


def _undirected(n_agents: int, pairs: np.ndarray, positions: np.ndarray | None = None) -> Graph:
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    receivers = np.concatenate([pairs[:, 0], pairs[:, 1]])
    senders = np.concatenate([pairs[:, 1], pairs[:, 0]])
    return from_edges(n_agents, receivers, senders, positions)


def complete(n_agents: int) -> Graph:
    """Every agent hears every agent."""
    ids = np.arange(n_agents)
    return from_edges(n_agents, np.repeat(ids, n_agents), np.tile(ids, n_agents))


def ring(n_agents: int, hops: int = 1) -> Graph:
    """Agents on a cycle, each connected to the ``hops`` nearest agents on either side."""
    if not hops >= 1:
        raise GraphError("ring hops must be >= 1")
    ids = np.arange(n_agents)
    shifts = np.arange(1, hops + 1)
    pairs = np.stack([np.repeat(ids, hops), (ids[:, None] + shifts).ravel() % n_agents], axis=1)
    return _undirected(n_agents, pairs)


def erdos_renyi(n_agents: int, p: float, seed: int) -> Graph:
    """Undirected G(n, p): each pair linked independently with probability p."""
    if not 0.0 <= p <= 1.0:
        raise GraphError(f"Erdos-Renyi p must lie in [0, 1], got {p}")
    import networkx as nx

    return from_networkx(nx.fast_gnp_random_graph(n_agents, p, seed=seed))


def k_regular(n_agents: int, k: int, seed: int) -> Graph:
    """A random undirected graph in which every agent has exactly k neighbours besides itself."""
    if k >= n_agents or (n_agents * k) % 2:
        raise GraphError(f"no {k}-regular graph on {n_agents} agents (need k < n and n*k even)")
    import networkx as nx

    return from_networkx(nx.random_regular_graph(k, n_agents, seed=seed))


def from_networkx(graph: nx.Graph) -> Graph:
    """Any networkx graph whose nodes are the agent ids 0..n-1 (in any order): node k is agent
    k. In a directed graph an arc u -> v means u sends to v; an undirected edge carries messages
    both ways."""
    n = _agent_nodes(graph)
    arcs = np.array([(u, v) for u, v, *_ in graph.edges], dtype=np.int64).reshape(-1, 2)
    if graph.is_directed():
        return from_edges(n, arcs[:, 1], arcs[:, 0])
    return _undirected(n, arcs)


def _agent_nodes(graph: nx.Graph) -> int:
    """The number of agents of a networkx graph whose nodes are the agent ids 0..n-1."""
    nodes = list(graph.nodes)
    ids = all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in nodes)
    if not ids or sorted(nodes) != list(range(len(nodes))):
        raise GraphError(
            "the nodes of a networkx graph must be the agent ids 0..n-1 "
            "(relabel it with networkx.convert_node_labels_to_integers)"
        )
    return len(nodes)


def node_groups(graph: nx.Graph) -> list | None:
    """The node attribute ``group`` of every agent 0..n-1 of a networkx graph (its task group),
    or None when no node has one."""
    values = [graph.nodes[k].get("group") for k in range(_agent_nodes(graph))]
    if all(value is None for value in values):
        return None
    missing = [k for k, value in enumerate(values) if value is None]
    if missing:
        raise GraphError(f"node {missing[0]} has no 'group' attribute (other nodes have one)")
    return values


def read_graphml(path: str | Path) -> nx.Graph:
    """A GraphML file whose node ids are the agent ids 0..n-1 (node attributes, such as
    ``group``, are kept)."""
    import networkx as nx

    try:
        return nx.read_graphml(path, node_type=int)
    except (OSError, ValueError, nx.NetworkXError, ParseError) as error:
        raise GraphError(f"cannot read GraphML {path}: {error}") from error


def read_edge_list(path: str | Path, n_agents: int | None = None, directed: bool = False) -> Graph:
    """A text file of integer pairs ``u v`` per line (``#`` comments allowed). Directed: u sends
    to v; undirected: both ways. Agents are 0..n-1, n inferred from the largest id if not given;
    an agent that appears on no line hears only itself."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # numpy: "input contained no data"
            pairs = np.loadtxt(path, dtype=np.int64, comments="#", ndmin=2)
    except (OSError, ValueError) as error:
        raise GraphError(f"cannot read edge list {path}: {error}") from error
    if pairs.size == 0:
        pairs = np.zeros((0, 2), dtype=np.int64)
    if pairs.shape[1] != 2:
        raise GraphError(f"edge list {path}: expected two agent ids per line")
    if pairs.size and pairs.min() < 0:
        raise GraphError(f"edge list {path}: agent ids must be non-negative, found {pairs.min()}")
    largest = int(pairs.max()) + 1 if pairs.size else 0
    if n_agents is None:
        if not largest:
            raise GraphError(f"edge list {path} is empty: give the number of agents")
        n_agents = largest
    elif largest > n_agents:
        raise GraphError(
            f"edge list {path} names agent {largest - 1}, but there are {n_agents} agents "
            f"(ids 0..{n_agents - 1})"
        )
    if directed:
        return from_edges(n_agents, pairs[:, 1], pairs[:, 0])
    return _undirected(n_agents, pairs)


def geometric(
    positions: np.ndarray,
    radius: float,
    max_neighbours: int | None,
    seed: int,
    keys: np.ndarray | None = None,
) -> Graph:
    """The paper's random geometric graph: l is in N_k when ||x_l - x_k|| <= radius; when that
    leaves more than ``max_neighbours`` agents (self included), k keeps itself plus
    ``max_neighbours - 1`` of the others chosen uniformly at random, so the result may be
    asymmetric. Neighbour search compares all pairs below :data:`ALL_PAIRS_BELOW` agents and
    uses a k-d tree above, block by block of receivers (both keep exactly the pairs with
    squared distance <= radius^2, summed over the coordinates in order); sampling is keyed on
    (seed, receiver key, sender key).
    """
    positions = np.asarray(positions, dtype=np.float64)
    n = len(positions)
    keys = rng.agent_keys(n) if keys is None else keys
    _check_geometric(radius, max_neighbours)
    if n < ALL_PAIRS_BELOW:
        pairs = close_pairs(positions, radius)
        receivers = np.concatenate([pairs[:, 0], pairs[:, 1]])
        senders = np.concatenate([pairs[:, 1], pairs[:, 0]])
        receivers, senders = _sampled(receivers, senders, max_neighbours, seed, keys)
        return from_edges(n, receivers, senders, positions)
    key = geometric_keys(positions, radius, max_neighbours, seed, keys, slice(0, n))
    return Graph(n, key // n, key % n, positions)


def geometric_keys(
    positions: np.ndarray,
    radius: float,
    max_neighbours: int | None,
    seed: int,
    keys: np.ndarray,
    receivers: slice,
) -> np.ndarray:
    """The edges of :func:`geometric` into the agents ``receivers`` (a range of ids) only, as
    sorted keys ``receiver * n + sender``: exactly the whole graph's edges of those receivers,
    whatever the range (the blocks of receivers are those of the whole graph, cut at multiples
    of ``_BLOCK_RECEIVERS``, and trimmed to the range). Memory: the range's edges, one block's
    candidates and the k-d tree of all positions."""
    positions = np.asarray(positions, dtype=np.float64)
    n = len(positions)
    _check_geometric(radius, max_neighbours)
    first, last = receivers.start, receivers.stop
    if n < ALL_PAIRS_BELOW:
        whole = geometric(positions, radius, max_neighbours, seed, keys)
        lo, hi = whole.offsets[first], whole.offsets[last]
        return whole.receivers[lo:hi] * n + whole.senders[lo:hi]
    from scipy.spatial import cKDTree

    tree = cKDTree(positions)
    start = first // _BLOCK_RECEIVERS * _BLOCK_RECEIVERS
    blocks = []
    for block in range(start, last, _BLOCK_RECEIVERS):
        key = _geometric_block(tree, positions, block, radius, max_neighbours, seed, keys)
        if block < first or block + _BLOCK_RECEIVERS > last:
            key = key[np.searchsorted(key, first * n) : np.searchsorted(key, last * n)]
        blocks.append(key)
    key = np.concatenate([np.zeros(0, dtype=np.int64), *blocks])
    del blocks
    return key


def _check_geometric(radius: float, max_neighbours: int | None) -> None:
    if radius <= 0:
        raise GraphError(f"geometric radius must be positive, got {radius}")
    if max_neighbours is not None and max_neighbours < 1:
        raise GraphError(f"max_neighbours must be >= 1 (self included), got {max_neighbours}")


_BLOCK_RECEIVERS = 1 << 15  # receivers whose neighbours are found and sampled at once


def _sampled(
    receivers: np.ndarray,
    senders: np.ndarray,
    max_neighbours: int | None,
    seed: int,
    keys: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The candidate edges (receiver, sender) each receiver keeps: all of them, or its
    ``max_neighbours - 1`` of smallest priority (receivers in increasing order)."""
    if max_neighbours is None:
        return receivers, senders
    priority = rng.uniform(seed, "neighbour-sampling", keys[receivers], keys[senders])[:, 0]
    order = np.argsort(receivers + priority)  # receiver, then priority
    receivers, senders = receivers[order], senders[order]
    starts = np.searchsorted(receivers, receivers, side="left")
    keep = np.arange(len(receivers)) - starts < max_neighbours - 1
    return receivers[keep], senders[keep]


def _geometric_block(
    tree: cKDTree,
    positions: np.ndarray,
    first: int,
    radius: float,
    max_neighbours: int | None,
    seed: int,
    keys: np.ndarray,
) -> np.ndarray:
    """The edges of receivers ``first .. first + _BLOCK_RECEIVERS - 1`` of :func:`geometric`,
    self-loops included, as sorted keys ``receiver * n + sender``.

    The same edges as taking every pair within ``radius`` at once (the k-d tree's
    ``query_pairs``) and sampling all receivers together: the pairs of a block come from the
    distances between the block's points and all points, within ``radius`` (``<=``), and the
    sampling order of receiver k's candidates is the same float64 key ``k + priority``; only
    its memory is bounded by the block (tested against the all-pairs construction)."""
    from scipy.spatial import cKDTree

    n = len(positions)
    last = min(first + _BLOCK_RECEIVERS, n)
    found = cKDTree(positions[first:last]).sparse_distance_matrix(
        tree, radius, output_type="ndarray"
    )
    receivers = found["i"].astype(np.int64) + first
    senders = found["j"].astype(np.int64)
    del found
    others = receivers != senders
    receivers, senders = _sampled(receivers[others], senders[others], max_neighbours, seed, keys)
    own = np.arange(first, last, dtype=np.int64)
    key = np.concatenate([receivers * n + senders, own * n + own])
    key.sort()
    return key


def close_pairs(positions: np.ndarray, radius: float) -> np.ndarray:
    """(P, 2) pairs i < j of agents within ``radius`` of each other, in no particular order:
    all pairs compared below :data:`ALL_PAIRS_BELOW` agents, a k-d tree above."""
    n = len(positions)
    if n >= ALL_PAIRS_BELOW:
        from scipy.spatial import cKDTree

        found = cKDTree(positions).query_pairs(radius, output_type="ndarray")
        return np.asarray(found, dtype=np.int64).reshape(-1, 2)
    squared = np.zeros((n, n))
    for axis in range(positions.shape[1]):
        gap = positions[:, None, axis] - positions[None, :, axis]
        squared += gap * gap
    i, j = np.nonzero(np.triu(squared <= radius * radius, 1))
    return np.stack([i, j], axis=1).astype(np.int64)


def spatial_order(positions: np.ndarray, bits: int = 16) -> np.ndarray:
    """A numbering of agents along a Z-order (Morton) curve: ``order[i]`` is the agent placed
    i-th. Agents close in space get close numbers, so that gathering neighbours' models reads
    memory that is already in cache."""
    positions = np.asarray(positions, dtype=np.float64)
    low, span = positions.min(0), np.ptp(positions, 0).max() or 1.0
    cells = ((positions - low) / span * (2**bits - 1)).astype(np.uint64)
    code = np.zeros(len(positions), dtype=np.uint64)
    for bit in range(bits):
        for axis in range(2):
            code |= ((cells[:, axis] >> np.uint64(bit)) & np.uint64(1)) << np.uint64(2 * bit + axis)
    return np.argsort(code, kind="stable")


def choose_byzantine(
    n_agents: int,
    count: int,
    seed: int,
    keys: np.ndarray | None = None,
) -> np.ndarray:
    """``count`` Byzantine agents drawn uniformly at random from (seed, agent key), sorted."""
    if not 0 <= count <= n_agents:
        raise GraphError(f"cannot choose {count} Byzantine agents among {n_agents}")
    keys = rng.agent_keys(n_agents) if keys is None else keys
    priority = rng.uniform(seed, "byzantine", keys)[:, 0]
    return np.sort(np.argsort(priority, kind="stable")[:count])
