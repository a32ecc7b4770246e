"""A range of a graph's receivers: what one rank of a partitioned run holds instead of the graph.

Edges are sorted by (receiver, sender) (see :mod:`byzmtl.graph`), so the edges into the agents
a..b-1 are one contiguous slice of the whole edge list; a :class:`GraphPart` holds that slice
(in global ids) and every agent's degree |N_k| (8 bytes per agent), from which the ranks' ranges
are cut. The network figure's inputs are reduced from the parts (:func:`drawn_piece`,
:func:`drawn_edges`): the links among the drawn agents, the number of links and whether the
graph is directed, the same as of the whole graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from byzmtl.graph import Graph, GraphError

MAX_DRAWN_AGENTS = 5000  # the network figure draws all agents, or this many sampled evenly by id


def drawn_agents(n_agents: int) -> np.ndarray:
    """The sorted ids of the agents the network figure draws: all, or MAX_DRAWN_AGENTS of
    them spread evenly by id."""
    if n_agents <= MAX_DRAWN_AGENTS:
        return np.arange(n_agents, dtype=np.int64)
    return np.unique(np.linspace(0, n_agents - 1, MAX_DRAWN_AGENTS).astype(np.int64))


@dataclass(frozen=True, eq=False)
class GraphPart:
    """The edges into the receivers ``agents`` (a range of ids) of a graph of ``n_agents``
    agents, in global ids and sorted as the whole graph's, and the degree of every agent of
    the whole graph."""

    n_agents: int
    agents: slice
    receivers: np.ndarray  # (E_r,) in [agents.start, agents.stop)
    senders: np.ndarray  # (E_r,) in [0, n_agents)
    degrees: np.ndarray  # (N,) |N_k| of every agent, self included
    positions: np.ndarray | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        first, last = self.agents.start, self.agents.stop
        own = int(self.degrees[first:last].sum())
        if len(self.receivers) != own or len(self.senders) != own:
            raise GraphError(f"agents {first}..{last - 1} have {own} edges, the part holds others")
        if own and (self.receivers[0] < first or self.receivers[-1] >= last):
            raise GraphError(f"a part of agents {first}..{last - 1} holds edges into others")

    @classmethod
    def of(cls, graph: Graph, agents: slice) -> GraphPart:
        """The part of ``graph`` of the receivers ``agents`` (copies of its edges, so that the
        graph may go)."""
        offsets = graph.offsets
        edges = slice(int(offsets[agents.start]), int(offsets[agents.stop]))
        return cls(
            graph.n_agents,
            agents,
            graph.receivers[edges].copy(),
            graph.senders[edges].copy(),
            graph.degrees,
            graph.positions,
        )

    @classmethod
    def from_keys(
        cls,
        n_agents: int,
        agents: slice,
        keys: np.ndarray,
        degrees: np.ndarray,
        positions: np.ndarray | None,
    ) -> GraphPart:
        """The part from its edges' sorted keys ``receiver * n_agents + sender``."""
        return cls(n_agents, agents, keys // n_agents, keys % n_agents, degrees, positions)

    @property
    def n_edges(self) -> int:
        """The whole graph's number of edges."""
        return int(self.degrees.sum())

    def drawn_piece(self) -> DrawnPiece:
        """What the part gives the network figure (:func:`drawn_piece`)."""
        return drawn_piece(self.n_agents, self.agents, self.receivers, self.senders)

    def outside_senders(self) -> np.ndarray:
        """The senders of the part's edges outside its range, sorted, each once (its halo)."""
        outside = (self.senders < self.agents.start) | (self.senders >= self.agents.stop)
        return np.unique(self.senders[outside])

    def outline(self, agent_cuts: Sequence[int] | np.ndarray) -> PartOutline:
        """The part without its edges (what a rank keeps once its engine holds them), in a
        graph cut into the ranges of receivers [agent_cuts[q], agent_cuts[q + 1])."""
        cuts = [int(c) for c in agent_cuts]
        before = np.concatenate([[0], np.cumsum(self.degrees)])[cuts]  # edges before each cut
        own = int(self.degrees[self.agents].sum())
        return PartOutline(self.n_agents, self.agents, own, tuple(cuts), tuple(map(int, before)))


@dataclass(frozen=True)
class PartOutline:
    """What a rank of a partitioned run keeps of its :class:`GraphPart` once its engine holds
    the part's edges in its own numbering (so that the edges are held once): the receivers'
    range and where each rank's agents and edges begin; nothing per agent of the network."""

    n_agents: int
    agents: slice
    n_own_edges: int  # the edges into the range's receivers
    agent_cuts: tuple[int, ...]  # (P + 1,) rank q's receivers are agent_cuts[q] .. [q + 1] - 1
    edge_cuts: tuple[int, ...]  # (P + 1,) and the edges into them edge_cuts[q] .. [q + 1] - 1

    @property
    def n_edges(self) -> int:
        """The whole graph's number of edges."""
        return self.edge_cuts[-1]


@dataclass(frozen=True)
class DrawnPiece:
    """What one part gives the network figure: its links among the drawn agents (global ids,
    self-loops left out, each undirected link once only after the whole graph is known to be
    undirected, so both directions here), its number of links, its edges that come from
    outside the part (to tell whether the graph is directed) and whether one of its inside
    edges has no reverse."""

    receivers: np.ndarray
    senders: np.ndarray
    n_off: int  # edges that are not self-loops
    crossing: np.ndarray  # (C,) keys receiver * n + sender of edges from outside the part
    one_way: bool  # an edge between two of the part's agents has no reverse


def drawn_piece(
    n_agents: int, agents: slice, receivers: np.ndarray, senders: np.ndarray
) -> DrawnPiece:
    """The :class:`DrawnPiece` of the edges (``receivers``, ``senders``) into ``agents`` of a
    graph of ``n_agents`` agents (all its edges into them, sorted); read in chunks of
    ``_CHUNK_EDGES`` edges, so that it needs 8 bytes per edge beyond the edges."""
    n = n_agents
    keys = receivers * n + senders  # sorted, as the edges
    shown = np.zeros(n, dtype=bool)
    shown[drawn_agents(n)] = True
    one_way, n_off = False, 0
    links: list[tuple[np.ndarray, np.ndarray]] = []
    crossing: list[np.ndarray] = []
    for start in range(0, len(keys), _CHUNK_EDGES):
        r, s = receivers[start : start + _CHUNK_EDGES], senders[start : start + _CHUNK_EDGES]
        off = r != s
        r, s = r[off], s[off]
        n_off += len(r)
        inside = (s >= agents.start) & (s < agents.stop)
        one_way = one_way or not _all_found(s[inside] * n + r[inside], keys)
        among = shown[r] & shown[s]
        links.append((r[among], s[among]))
        crossing.append(r[~inside] * n + s[~inside])
    return DrawnPiece(
        np.concatenate([np.zeros(0, np.int64), *(r for r, _ in links)]),
        np.concatenate([np.zeros(0, np.int64), *(s for _, s in links)]),
        n_off,
        np.concatenate([np.zeros(0, np.int64), *crossing]),
        one_way,
    )


_CHUNK_EDGES = 1 << 20


def _all_found(values: np.ndarray, sorted_keys: np.ndarray) -> bool:
    """Whether every value is one of ``sorted_keys``."""
    if not len(values):
        return True
    found = np.searchsorted(sorted_keys, values).clip(max=max(len(sorted_keys) - 1, 0))
    return bool(len(sorted_keys)) and bool(np.all(sorted_keys[found] == values))


@dataclass(frozen=True)
class DrawnEdges:
    """The edges among the drawn agents of a graph of ``n_agents`` agents (global ids, sorted
    by (receiver, sender), self-loops left out), with the whole graph's ``n_links`` and
    ``directed``: all that :func:`byzmtl.plots.network_of` reads of the whole graph."""

    n_agents: int
    receivers: np.ndarray
    senders: np.ndarray
    positions: np.ndarray | None  # (M, 2) of the drawn agents, ``drawn_agents(n_agents)``
    n_links: int
    directed: bool


def drawn_edges(
    n_agents: int, pieces: Sequence[DrawnPiece], positions: np.ndarray | None
) -> DrawnEdges:
    """The whole graph's :class:`DrawnEdges` from every part's piece, in the parts' order
    (increasing receivers), and every agent's ``positions`` (of which it keeps the drawn
    agents'): the graph is directed when a part's inside edge, or an edge between two parts,
    has no reverse."""
    crossing = np.concatenate([np.zeros(0, np.int64), *(p.crossing for p in pieces)])
    reverse = (crossing % n_agents) * n_agents + crossing // n_agents
    directed = any(p.one_way for p in pieces) or not _all_found(reverse, crossing)
    n_off = sum(p.n_off for p in pieces)
    return DrawnEdges(
        n_agents,
        np.concatenate([np.zeros(0, np.int64), *(p.receivers for p in pieces)]),
        np.concatenate([np.zeros(0, np.int64), *(p.senders for p in pieces)]),
        None if positions is None else np.asarray(positions)[drawn_agents(n_agents)],
        n_off if directed else n_off // 2,
        directed,
    )
