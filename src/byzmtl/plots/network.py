"""network.*: the agents coloured by task group, Byzantine agents as red crosses, the links as
thin lines; and network.npz, what the figure is drawn from (:class:`Network`). Up to nine groups
get a legend, more a continuous colormap and a colour bar."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.artist import Artist
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from byzmtl.graph_part import MAX_DRAWN_AGENTS as MAX_DRAWN_AGENTS
from byzmtl.graph_part import DrawnEdges, drawn_agents, drawn_edges, drawn_piece

if TYPE_CHECKING:  # not imported: the figure process runs without torch
    from byzmtl.graph import Graph

MAX_DRAWN_LINKS = 20_000
MAX_CATEGORICAL_GROUPS = 9  # tab10 without its red, which marks Byzantine agents


@dataclass(frozen=True)
class Network:
    """What the network figure needs (network.npz): the drawn agents (all, or a sample of
    MAX_DRAWN_AGENTS), their groups, Byzantine flags and positions (if the case has places),
    and the links among them (each undirected link once; at most MAX_DRAWN_LINKS, sampled)."""

    n_agents: int
    n_links: int  # links of the whole graph (self-loops left out)
    directed: bool
    agents: np.ndarray  # (M,) ids of the drawn agents
    groups: np.ndarray  # (M,)
    byzantine: np.ndarray  # (M,) bool
    n_byzantine: int  # in the whole graph
    group_names: list[str]
    receivers: np.ndarray  # links, as indices into ``agents``
    senders: np.ndarray
    links_among_drawn: int  # before sampling to MAX_DRAWN_LINKS
    positions: np.ndarray | None = None  # (M, 2)


def network_of(
    graph: Graph | DrawnEdges,
    groups: np.ndarray,
    group_names: Sequence[str],
    byzantine: np.ndarray,
) -> Network:
    """The drawable network of ``graph`` (or of the :class:`~byzmtl.graph_part.DrawnEdges` a
    partitioned run's ranks reduce from their parts): agents sampled evenly by id above
    MAX_DRAWN_AGENTS, links among the drawn agents sampled (fixed seed) above
    MAX_DRAWN_LINKS."""
    n = graph.n_agents
    if not isinstance(graph, DrawnEdges):
        piece = drawn_piece(n, slice(0, n), graph.receivers, graph.senders)
        graph = drawn_edges(n, [piece], graph.positions)
    shown = drawn_agents(n)
    local = np.full(n, -1, dtype=np.int64)
    local[shown] = np.arange(len(shown))
    receivers, senders = graph.receivers.astype(np.int64), graph.senders.astype(np.int64)
    keep = np.ones(len(receivers), bool) if graph.directed else receivers < senders
    receivers, senders = local[receivers[keep]], local[senders[keep]]
    among = len(receivers)
    if among > MAX_DRAWN_LINKS:
        pick = np.sort(np.random.default_rng(0).choice(among, MAX_DRAWN_LINKS, replace=False))
        receivers, senders = receivers[pick], senders[pick]
    bad = np.zeros(n, bool)
    bad[np.asarray(byzantine, dtype=np.int64)] = True
    return Network(
        n_agents=n,
        n_links=graph.n_links,
        directed=graph.directed,
        agents=shown,
        groups=np.asarray(groups)[shown].astype(np.int64),
        byzantine=bad[shown],
        n_byzantine=int(bad.sum()),
        group_names=[str(g) for g in group_names],
        receivers=receivers,
        senders=senders,
        links_among_drawn=among,
        positions=graph.positions,
    )


def save_network(
    path: Path,
    graph: Graph | DrawnEdges,
    groups: np.ndarray,
    group_names: Sequence[str],
    byzantine: np.ndarray,
) -> None:
    """Write network.npz: what :func:`network_figure` draws (see :class:`Network`)."""
    network = network_of(graph, groups, group_names, byzantine)
    arrays = {k: v for k, v in vars(network).items() if v is not None}
    arrays["group_names"] = np.array(network.group_names, dtype=str)
    with open(path, "wb") as file:
        np.savez_compressed(file, **arrays)


def load_network(path: Path) -> Network:
    """Read network.npz written by :func:`save_network`."""
    with np.load(path, allow_pickle=False) as data:
        fields = {name: data[name] for name in data.files}
    scalars = ("n_agents", "n_links", "n_byzantine", "links_among_drawn")
    values: dict[str, Any] = {k: int(fields.pop(k)) for k in scalars}
    values["directed"] = bool(fields.pop("directed"))
    values["group_names"] = [str(g) for g in fields.pop("group_names")]
    return Network(**values, **fields)


def _marker(marker: str, colour: Any, label: str) -> Line2D:
    """A legend entry for agents drawn as ``marker`` in ``colour``."""
    size = 8 if marker == "X" else 6
    return Line2D(
        [], [], ls="", marker=marker, color=colour, mec="k", mew=0.4, ms=size, label=label
    )


def network_figure(network: Network, title: str = "") -> Figure:
    """Agents coloured by task group, Byzantine agents as red crosses, links as thin lines.
    Agents with places are drawn there; others on a circle, ordered by group. Links are fainter
    the denser the graph (a complete graph: barely visible chords). Up to nine groups get a
    legend, more a continuous colormap and a colour bar."""
    m = len(network.agents)
    circle = network.positions is None
    if circle:
        order = np.lexsort((network.agents, network.groups))
        angle = np.empty(m)
        angle[order] = 2 * np.pi * np.arange(m) / max(m, 1)
        positions = np.stack([np.cos(angle), np.sin(angle)], 1)
    else:
        positions = np.asarray(network.positions, dtype=float)
    possible = m * (m - 1) // (1 if network.directed else 2)
    density = network.links_among_drawn / possible if possible else 0.0
    links = len(network.receivers)
    # sparse graphs: plain lines; dense ones: fainter with density (a complete graph of 30:
    # barely visible chords), small ones (a few dozen links) always visible
    ink = min(max(0.05 / max(density, 1e-12), 30 / max(links, 1)), 5000 / max(links, 1))
    alpha = float(np.clip(ink, 0.05, 0.5))
    fig, ax = plt.subplots(figsize=(6.8, 6.0), layout="constrained")
    segments = np.stack([positions[network.senders], positions[network.receivers]], 1)
    ax.add_collection(LineCollection(list(segments), colors="0.45", linewidths=0.4, alpha=alpha))
    n_groups = max(len(network.group_names), int(network.groups.max(initial=-1)) + 1)
    names = [
        network.group_names[g] if g < len(network.group_names) else f"group {g}"
        for g in range(n_groups)
    ]
    normal = ~network.byzantine
    small = m <= 500

    def agents(drawn: np.ndarray, **colour: Any) -> None:
        """The normal agents ``drawn`` (a mask) as dots of the given colour."""
        points = positions[drawn]
        size = 24 if small else 6
        ax.scatter(
            points[:, 0], points[:, 1], s=size, zorder=3, edgecolors="k", linewidths=0.3, **colour
        )

    handles: list[Artist] = []
    if n_groups <= MAX_CATEGORICAL_GROUPS:
        tab10 = matplotlib.color_sequences["tab10"]
        palette = [c for i, c in enumerate(tab10) if i != 3]  # red
        for g in range(n_groups):
            members = normal & (network.groups == g)
            if members.any():
                agents(members, color=palette[g])
                handles.append(_marker("o", palette[g], names[g]))
    else:
        cmap, norm = plt.get_cmap("viridis"), Normalize(-0.5, n_groups - 0.5)
        agents(normal, c=network.groups[normal], cmap=cmap, norm=norm)
        bar = fig.colorbar(plt.cm.ScalarMappable(norm, cmap), ax=ax, shrink=0.8, pad=0.02)
        bar.set_label("task group")
        bar.locator = MaxNLocator(nbins=10, integer=True)
        bar.formatter = FuncFormatter(lambda x, _: names[int(x)] if 0 <= x < n_groups else "")
        bar.update_ticks()
    if network.byzantine.any():
        bad = positions[network.byzantine]
        ax.scatter(
            bad[:, 0],
            bad[:, 1],
            s=60 if small else 20,
            color="red",
            marker="X",
            edgecolors="k",
            linewidths=0.5,
            zorder=4,
        )
        count = f"{network.n_byzantine}"
        if m < network.n_agents:
            count += f", {int(network.byzantine.sum())} drawn"
        handles.append(_marker("X", "red", f"Byzantine ({count})"))
    if handles:
        beside = n_groups <= MAX_CATEGORICAL_GROUPS
        fig.legend(
            handles=handles,
            loc="outside right upper" if beside else "outside lower center",
            ncols=1 if beside else 3,
            frameon=False,
            fontsize="small",
        )
    ax.autoscale()
    ax.set_aspect("equal")
    if circle:
        ax.set_axis_off()
    kind = "directed edges" if network.directed else "links"
    heading = f"{network.n_agents} agents, {network.n_links} {kind}"
    if possible and network.n_links == possible and m == network.n_agents:
        heading += " (complete graph)"
    if m < network.n_agents:
        heading += f"\n{m} agents drawn, evenly by id"
    if links < network.links_among_drawn:
        heading += f"\n{links} of their {network.links_among_drawn} {kind} drawn, at random"
    ax.set_title(f"{title}\n{heading}" if title else heading, fontsize="medium")
    return fig
