"""Paper-style figures, drawn from results only.

``metrics_figure``: one panel per metric (and per task group where asked); per rule a mean line
over normal agents and a shaded band from the best to the worst normal agent.
``network_figure``: the communication graph, agents coloured by task, Byzantine agents in red.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import networkx as nx
import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection

from byzmtl.graph import Graph

RULE_COLOURS = {
    "loss": "tab:blue",
    "distance": "tab:orange",
    "average": "tab:green",
    "none": "tab:gray",
}
MAX_DRAWN_AGENTS = 5000


def metrics_figure(
    metrics: pd.DataFrame,
    metric_names: Sequence[str],
    time_name: str,
    path: Path,
    log_metrics: Iterable[str] = (),
    groups: Sequence[str] = (),
    title: str = "",
) -> None:
    """Mean line and min-max band per rule; rows: all normal agents, then each group."""
    rows = ["all", *groups]
    log_metrics = set(log_metrics)
    fig, axes = plt.subplots(
        len(rows),
        len(metric_names),
        figsize=(5 * len(metric_names), 3.6 * len(rows)),
        squeeze=False,
    )
    palette = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"][4:] * 10)
    colours = {rule: RULE_COLOURS.get(rule) or next(palette) for rule in metrics["rule"].unique()}
    for row, group in enumerate(rows):
        part = metrics[metrics["group"] == group]
        for col, metric in enumerate(metric_names):
            ax = axes[row][col]
            for rule, lines in part.groupby("rule", sort=False):
                t = lines[time_name].to_numpy()
                ax.plot(t, lines[f"{metric}_mean"], color=colours[rule], label=rule, lw=1.5)
                ax.fill_between(
                    t,
                    lines[f"{metric}_min"],
                    lines[f"{metric}_max"],
                    color=colours[rule],
                    alpha=0.18,
                    lw=0,
                )
            if metric in log_metrics:
                ax.set_yscale("log")
            ax.set_xlabel(time_name)
            ax.set_ylabel(metric if group == "all" else f"{metric} ({group})")
            ax.grid(True, which="major", alpha=0.3)
    axes[0][0].legend(loc="best", fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def network_figure(
    graph: Graph,
    groups: np.ndarray,
    byzantine: np.ndarray,
    path: Path,
    group_names: Sequence[str] = (),
) -> None:
    """Agents coloured by task group, Byzantine agents in red, edges as thin lines. Graphs of more
    than MAX_DRAWN_AGENTS agents are drawn as a sample of agents and their edges."""
    n = graph.n_agents
    if graph.positions is not None:
        positions = graph.positions
    else:
        layout = nx.circular_layout(range(n)) if n <= 200 else nx.random_layout(range(n), seed=0)
        positions = np.array([layout[k] for k in range(n)])
    shown = (
        np.arange(n)
        if n <= MAX_DRAWN_AGENTS
        else np.linspace(0, n - 1, MAX_DRAWN_AGENTS).astype(int)
    )
    is_shown = np.zeros(n, dtype=bool)
    is_shown[shown] = True
    keep = is_shown[graph.receivers] & is_shown[graph.senders] & (graph.receivers != graph.senders)
    segments = np.stack([positions[graph.senders[keep]], positions[graph.receivers[keep]]], 1)
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.add_collection(LineCollection(segments, colors="0.6", linewidths=0.4, alpha=0.5))
    bad = np.zeros(n, dtype=bool)
    bad[byzantine] = True
    cmap = plt.get_cmap("tab10")
    for g in np.unique(groups):
        members = shown[(groups[shown] == g) & ~bad[shown]]
        label = group_names[g] if g < len(group_names) else f"group {g}"
        ax.scatter(
            *positions[members].T,
            s=22,
            color=cmap(int(g) % 10),
            label=label,
            zorder=3,
            edgecolors="k",
            linewidths=0.3,
        )
    attackers = shown[bad[shown]]
    if len(attackers):
        ax.scatter(
            *positions[attackers].T, s=30, color="red", marker="X", label="Byzantine", zorder=4
        )
    ax.autoscale()
    ax.set_aspect("equal")
    ax.set_title(
        f"{n} agents, {graph.n_edges - n} links"
        + (" (sample drawn)" if n > MAX_DRAWN_AGENTS else "")
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
