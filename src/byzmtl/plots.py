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
from matplotlib.ticker import MaxNLocator

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
    colours = rule_colours(metrics["rule"].unique())
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
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(metric if group == "all" else f"{metric} ({group})")
            ax.grid(True, which="major", alpha=0.3)
    _finish(fig, axes[0][0], path, title)


def rule_colours(rules: Iterable[str]) -> dict[str, str]:
    """The paper's colours for its rules, the default cycle's later colours for the others."""
    palette = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"][4:] * 10)
    return {rule: RULE_COLOURS.get(rule) or next(palette) for rule in rules}


def _finish(fig: plt.Figure, legend_axes: plt.Axes, path: Path, title: str) -> None:
    legend_axes.legend(loc="best", fontsize="small")
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
    palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 3]  # red: Byzantine
    for g in np.unique(groups):
        members = shown[(groups[shown] == g) & ~bad[shown]]
        label = group_names[g] if g < len(group_names) else f"group {g}"
        ax.scatter(
            *positions[members].T,
            s=22,
            color=palette[int(g) % len(palette)],
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


def diagnostics_figure(
    diagnostics: pd.DataFrame, path: Path, time_name: str = "iteration", title: str = ""
) -> None:
    """Three panels per rule over rounds: weight on Byzantine senders (mean line, max dashed),
    weight on senders of the agent's own task (mean line, min dashed), and regret against no
    cooperation (mean line, max dashed; at recorded rounds)."""
    panels = [
        ("byzantine_weight", "mean", "max", "weight on Byzantine senders"),
        ("own_task_weight", "mean", "min", "weight on own-task senders"),
        ("regret", "mean", "max", "regret vs no cooperation"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    colours = rule_colours(diagnostics["rule"].unique())
    for ax, (name, line, dashed, label) in zip(axes[0], panels, strict=True):
        for rule, rows in diagnostics.groupby("rule", sort=False):
            rows = rows.dropna(subset=[f"{name}_{line}"])
            t = rows[time_name].to_numpy()
            ax.plot(t, rows[f"{name}_{line}"], color=colours[rule], label=rule, lw=1.5)
            ax.plot(t, rows[f"{name}_{dashed}"], color=colours[rule], lw=0.8, ls="--")
        if name == "regret":
            ax.set_yscale("symlog")
        ax.set_xlabel(time_name)
        ax.set_ylabel(f"{label} ({line}; {dashed} dashed)")
        ax.grid(True, which="major", alpha=0.3)
    _finish(fig, axes[0][0], path, title)


def matrix_figure(
    table: pd.DataFrame,
    rules: Sequence[str],
    attacks: Sequence[str],
    metrics: Sequence[str],
    higher_is_better: Iterable[str],
    path: Path,
    title: str = "",
) -> None:
    """The resilience matrix (``byzmtl matrix``'s table): one panel per metric, rules x attacks,
    coloured by log10(rule / none) under the same attack (blue better than no cooperation, red
    worse; for metrics where higher is better the sign is flipped), annotated with the mean."""
    higher = set(higher_is_better)
    indexed = table.set_index(["rule", "attack"])
    fig, axes = plt.subplots(
        len(metrics),
        1,
        figsize=(0.75 * len(attacks) + 4, (0.32 * len(rules) + 1.6) * len(metrics)),
        squeeze=False,
    )
    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        values = np.full((len(rules), len(attacks)), np.nan)
        ratios = np.full_like(values, np.nan)
        for i, rule in enumerate(rules):
            for j, attack in enumerate(attacks):
                row = indexed.loc[(rule, attack)]
                values[i, j], ratios[i, j] = row[f"{metric}_mean"], row[f"{metric}_vs_none"]
        with np.errstate(divide="ignore", invalid="ignore"):
            colour = np.log10(ratios) * (-1 if metric in higher else 1)
        colour = np.clip(np.nan_to_num(colour, nan=0.0, posinf=3.0, neginf=-3.0), -3, 3)
        image = ax.imshow(colour, cmap="RdBu_r", vmin=-3, vmax=3, aspect="auto")
        for i in range(len(rules)):
            for j in range(len(attacks)):
                text = "n/a" if np.isnan(values[i, j]) else f"{values[i, j]:.3g}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(attacks)), attacks, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(rules)), rules, fontsize=8)
        ax.set_title(f"{metric} (colour: log10 vs none)", fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
