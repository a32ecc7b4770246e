"""Paper-style figures, drawn from a results folder alone.

:func:`draw_figures` redraws, from the files of a run's folder, in PNG, PDF or SVG:

    figure.*       metrics.csv: one panel per metric (rows: all normal agents, then each task
                   group where the case study asks); per rule a mean line over normal agents and
                   a band, min-max by default or a percentile band such as ``p10-p90`` (needs
                   <metric>_p10 and <metric>_p90 columns; otherwise min-max, with a warning)
    diagnostics.*  diagnostics.csv: weight on Byzantine senders, weight on own-task senders and
                   regret against no cooperation, on the time axis of figure.* (epochs in the
                   learning case studies)
    network.*      network.npz (written by :func:`save_network`): agents coloured by task group,
                   Byzantine agents as red crosses

Metadata comes from summary.json: the time unit, metric names, rules in order, the title, and the
``plot`` hints ``{"groups": [...], "log_metrics": [...]}`` (groups drawn as rows, metrics that
may be drawn on a log scale); a summary without them takes the case study's class attributes
from the registry, else plots every metric as a log candidate and only the "all" row.

Scales come from the data of each panel (:func:`axis_scale`): log where positive data span more
than a decade, symlog where data with zeros or negatives do, linear otherwise; non-finite values
are left out, and the panel says so. Colours: every rule and group its own colour (the paper's
for its four rules; a continuous colormap beyond 20 rules or 9 groups, with a colour bar for
groups).

:func:`matrix_figure` draws ``byzmtl matrix``'s heatmaps.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize, SymLogNorm, to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from byzmtl.graph import Graph
from byzmtl.names import NO_ATTACK, NO_COOPERATION

RULE_COLOURS = {
    "loss": "tab:blue",
    "distance": "tab:orange",
    "average": "tab:green",
    NO_COOPERATION: "tab:gray",
}
FORMATS = ("png", "pdf", "svg")
MAX_DRAWN_AGENTS = 5000
MAX_DRAWN_LINKS = 20_000
MAX_CATEGORICAL_GROUPS = 9  # tab10 without its red, which marks Byzantine agents
NO_ATTACK_LABEL = "no attack"
NO_COOPERATION_LABEL = "none (no cooperation)"
DPI = 130

Scale = tuple[str, dict[str, float]]


# --------------------------------------------------------------------------------------------
# Scales, colours, bands


def axis_scale(values: Iterable[float] | np.ndarray, allow_log: bool = True) -> Scale:
    """The y scale for a panel showing ``values`` (NaN and infinities ignored).

    Positive data: log when max / min > 10, else linear. Data with zeros or negatives: symlog
    when the nonzero magnitudes, from their 10th percentile p up to their maximum, span more
    than a decade (linear within +-p, rounded down to a power of ten, and at most 12 decades
    below the maximum), else linear. Linear for no finite data or when ``allow_log`` is false.
    """
    data = np.asarray(values, dtype=float).ravel()
    data = data[np.isfinite(data)]
    if not allow_log or data.size == 0:
        return "linear", {}
    if data.min() > 0:
        return ("log", {}) if _decades(data.min(), data.max()) > 1 else ("linear", {})
    magnitudes = np.abs(data[data != 0])
    if magnitudes.size == 0:
        return "linear", {}
    floor = float(np.percentile(magnitudes, 10, method="lower"))
    if _decades(floor, magnitudes.max()) <= 1:
        return "linear", {}
    power = max(np.floor(np.log10(floor)), np.floor(np.log10(magnitudes.max())) - 12)
    return "symlog", {"linthresh": float(10.0**power)}


def _decades(low: float, high: float) -> float:
    """log10(high / low) for positive numbers, without overflow."""
    return float(np.log10(high) - np.log10(low))


def _apply_scale(ax: plt.Axes, values: np.ndarray, allow_log: bool) -> None:
    name, options = axis_scale(values, allow_log)
    ax.set_yscale(name, **options)


def rule_colours(rules: Iterable[str]) -> dict[str, Any]:
    """A distinct colour per rule: the paper's for its four rules and tab10's others up to ten
    rules, tab20 up to twenty, a continuous colormap beyond."""
    rules = list(dict.fromkeys(rules))
    if len(rules) <= 10:
        palette = matplotlib.color_sequences["tab10"]
    elif len(rules) <= 20:
        palette = matplotlib.color_sequences["tab20"]
    else:
        return {
            rule: plt.get_cmap("turbo")(x)
            for rule, x in zip(rules, np.linspace(0, 1, len(rules)), strict=True)
        }
    fixed = {rule: to_rgb(RULE_COLOURS[rule]) for rule in rules if rule in RULE_COLOURS}
    free = iter(c for c in palette if to_rgb(c) not in fixed.values())
    return {rule: fixed.get(rule) or next(free) for rule in rules}


MARKERS = ("o", "s", "^", "D", "v", "P", "*", "h", "<", ">")


def _mean_line(ax: plt.Axes, t: np.ndarray, y: np.ndarray, colour: Any, index: int) -> None:
    """A rule's mean line with its own marker about ten times along it (staggered between
    rules), so that a rule whose line coincides with another's still shows."""
    step = max(1, len(t) // 10)
    start = (index * step // len(MARKERS)) % step
    ax.plot(
        t,
        y,
        color=colour,
        lw=1.5,
        marker=MARKERS[index % len(MARKERS)],
        ms=4.5,
        markevery=(start, step),
        mfc="none",
    )


def _rule_handle(colour: Any, index: int, label: str) -> Line2D:
    marker = MARKERS[index % len(MARKERS)]
    return Line2D([], [], color=colour, lw=1.5, marker=marker, ms=4.5, mfc="none", label=label)


def band_columns(band: str) -> tuple[str, str, str]:
    """(low suffix, high suffix, legend text) of a band: ``minmax`` or ``pA-pB`` (percentiles,
    0 <= A < B <= 100); ValueError otherwise."""
    if band == "minmax":
        return "min", "max", "band: min to max over normal agents"
    match = re.fullmatch(r"p(\d{1,3})-p(\d{1,3})", band)
    if match is None or not int(match[1]) < int(match[2]) <= 100:
        raise ValueError(f"band: expected minmax or pA-pB (e.g. p10-p90), got {band!r}")
    low, high = match[1], match[2]
    return f"p{low}", f"p{high}", f"band: {low}th to {high}th percentile over normal agents"


def check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    """The figure formats, validated (png, pdf, svg); ValueError naming the bad one."""
    chosen = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in formats))
    for name in chosen:
        if name not in FORMATS:
            raise ValueError(f"format: {name!r} is not one of {', '.join(FORMATS)}")
    if not chosen:
        raise ValueError("format: name at least one of png, pdf, svg")
    return chosen


def save_figure(fig: Figure, stem: Path, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Write ``fig`` as ``stem``.<format> for every format (each through a temporary file and a
    rename: readers never see half a figure) and close it."""
    written, umask = [], os.umask(0)
    os.umask(umask)
    try:
        for name in formats:
            path = stem.with_name(f"{stem.name}.{name}")
            handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            os.close(handle)
            try:
                fig.savefig(temporary, dpi=DPI, format=name)
                os.chmod(temporary, 0o666 & ~umask)  # mkstemp's files: owner only
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
            written.append(path)
    finally:
        plt.close(fig)
    return written


def _finite(values: pd.Series | np.ndarray) -> tuple[np.ndarray, int]:
    """Values as floats with infinities made NaN (so they are not drawn), and how many were
    not finite."""
    data = np.asarray(values, dtype=float).copy()
    bad = ~np.isfinite(data)
    data[bad] = np.nan
    return data, int(np.count_nonzero(bad))


def _note(ax: plt.Axes, text: str, alarm: bool = False) -> None:
    """A line of text in the panel's top left corner (red for values left out)."""
    colour = "tab:red" if alarm else "0.3"
    ax.text(0.01, 0.99, text, transform=ax.transAxes, ha="left", va="top", fontsize=7, color=colour)


def _legend_below(fig: Figure, handles: list[Any]) -> None:
    """One legend in rows below the panels, outside every axes (never over a curve)."""
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=min(len(handles), 7),
        frameon=False,
        fontsize="small",
    )


# --------------------------------------------------------------------------------------------
# Metrics and diagnostics over time


def metrics_figure(
    metrics: pd.DataFrame,
    metric_names: Sequence[str],
    time_name: str,
    log_metrics: Iterable[str] | None = None,
    groups: Sequence[str] = (),
    title: str = "",
    band: str = "minmax",
    rules: Sequence[str] | None = None,
) -> Figure:
    """Mean line and band per rule; rows: all normal agents, then each of ``groups``; columns:
    metrics. ``log_metrics``: the metrics that may be drawn on a log scale (None: all); the
    scale itself follows the data (:func:`axis_scale`)."""
    low, high, band_text = band_columns(band)
    rows = ["all", *[g for g in groups if g in set(metrics["group"])]]
    rules = list(rules) if rules is not None else list(dict.fromkeys(metrics["rule"]))
    colours = rule_colours(rules)
    fig, axes = plt.subplots(
        len(rows),
        len(metric_names),
        figsize=(4.2 * len(metric_names) + 0.6, 3.0 * len(rows) + 1.0),
        squeeze=False,
        layout="constrained",
    )
    for row, group in enumerate(rows):
        part = metrics[metrics["group"] == group]
        for col, metric in enumerate(metric_names):
            ax, drawn, hidden = axes[row][col], [], 0
            for rule in rules:
                lines = part[part["rule"] == rule].sort_values(time_name)
                if lines.empty:
                    continue
                t = lines[time_name].to_numpy(dtype=float)
                mean, bad_mean = _finite(lines[f"{metric}_mean"])
                lo, bad_lo = _finite(lines[f"{metric}_{low}"])
                hi, bad_hi = _finite(lines[f"{metric}_{high}"])
                hidden += bad_mean + bad_lo + bad_hi
                _mean_line(ax, t, mean, colours[rule], rules.index(rule))
                ax.fill_between(t, lo, hi, color=colours[rule], alpha=0.18, lw=0)
                drawn.extend([mean, lo, hi])
            allow_log = log_metrics is None or metric in set(log_metrics)
            _apply_scale(ax, np.concatenate(drawn) if drawn else np.array([]), allow_log)
            if hidden:
                _note(ax, f"{hidden} non-finite values not drawn", alarm=True)
            ax.set_xlabel(time_name)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
            ax.set_ylabel(metric if group == "all" else f"{metric} ({group})")
            ax.grid(True, which="major", alpha=0.3)
    handles: list[Artist] = [_rule_handle(colours[r], i, r) for i, r in enumerate(rules)]
    handles.append(Patch(color="0.5", alpha=0.3, label=band_text))
    _legend_below(fig, handles)
    if title:
        fig.suptitle(title)
    return fig


DIAGNOSTIC_PANELS = (
    ("byzantine_weight", "max", "weight on Byzantine senders", "sum of weights"),
    ("own_task_weight", "min", "weight on own-task senders", "sum of weights"),
    ("regret", "max", "regret against no cooperation", "cumulative excess loss"),
)


def diagnostics_figure(
    diagnostics: pd.DataFrame,
    time_name: str,
    title: str = "",
    loss_metric: str | None = None,
    rules: Sequence[str] | None = None,
    byzantine: int | None = None,
) -> Figure:
    """Three panels over time, per rule: weight on Byzantine senders (mean over normal agents,
    worst agent's max dashed), weight on own-task senders (mean, min dashed), and regret against
    no cooperation (mean, max dashed; at records). ``byzantine``: how many Byzantine agents the
    run had (a run without any says so in its first panel)."""
    rules = list(rules) if rules is not None else list(dict.fromkeys(diagnostics["rule"]))
    colours = rule_colours(rules)
    fig, axes = plt.subplots(
        1, 3, figsize=(13.2, 3.9), squeeze=False, sharex=True, layout="constrained"
    )
    for ax, (name, worst, heading, unit) in zip(axes[0], DIAGNOSTIC_PANELS, strict=True):
        drawn, hidden = [], 0
        for rule in rules:
            rows = diagnostics[diagnostics["rule"] == rule].dropna(subset=[f"{name}_mean"])
            t = rows[time_name].to_numpy(dtype=float)
            mean, bad_mean = _finite(rows[f"{name}_mean"])
            extreme, bad_extreme = _finite(rows[f"{name}_{worst}"])
            hidden += bad_mean + bad_extreme
            _mean_line(ax, t, mean, colours[rule], rules.index(rule))
            ax.plot(t, extreme, color=colours[rule], lw=0.8, ls="--")
            drawn.extend([mean, extreme])
        values = np.concatenate(drawn) if drawn else np.array([])
        _apply_scale(ax, values, allow_log=name == "regret")
        if not np.isfinite(values).any():
            reason = "no rule with weights" if name != "regret" else "not measured (no 'none')"
            _note(ax, reason)
        elif hidden:
            _note(ax, f"{hidden} non-finite values not drawn", alarm=True)
        elif name == "byzantine_weight" and byzantine == 0:
            _note(ax, "no Byzantine agents in this run")
        ax.set_title(heading, fontsize="medium")
        ax.set_xlabel(time_name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
        ax.set_ylabel(f"{unit} ({loss_metric})" if name == "regret" and loss_metric else unit)
        ax.grid(True, which="major", alpha=0.3)
    handles = [_rule_handle(colours[r], i, r) for i, r in enumerate(rules)]
    handles.append(Line2D([], [], color="k", lw=1.5, label="mean over normal agents"))
    handles.append(Line2D([], [], color="k", lw=0.8, ls="--", label="worst normal agent"))
    _legend_below(fig, handles)
    if title:
        fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------------
# The network


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
    graph: Graph, groups: np.ndarray, group_names: Sequence[str], byzantine: np.ndarray
) -> Network:
    """The drawable network of ``graph``: agents sampled evenly by id above MAX_DRAWN_AGENTS,
    links among the drawn agents sampled (fixed seed) above MAX_DRAWN_LINKS."""
    n = graph.n_agents
    shown = np.arange(n) if n <= MAX_DRAWN_AGENTS else np.linspace(0, n - 1, MAX_DRAWN_AGENTS)
    shown = np.unique(shown.astype(np.int64))
    local = np.full(n, -1, dtype=np.int64)
    local[shown] = np.arange(len(shown))
    off = graph.receivers != graph.senders
    receivers, senders = graph.receivers[off].astype(np.int64), graph.senders[off].astype(np.int64)
    keys = receivers * n + senders  # sorted: the graph's edges are sorted by (receiver, sender)
    reverse = senders * n + receivers
    found = np.searchsorted(keys, reverse).clip(max=max(len(keys) - 1, 0))
    directed = bool(len(keys) and not np.all(keys[found] == reverse))
    keep = np.ones(len(keys), bool) if directed else receivers < senders
    keep &= (local[receivers] >= 0) & (local[senders] >= 0)
    receivers, senders = local[receivers[keep]], local[senders[keep]]
    among = len(receivers)
    if among > MAX_DRAWN_LINKS:
        pick = np.sort(np.random.default_rng(0).choice(among, MAX_DRAWN_LINKS, replace=False))
        receivers, senders = receivers[pick], senders[pick]
    bad = np.zeros(n, bool)
    bad[np.asarray(byzantine, dtype=np.int64)] = True
    return Network(
        n_agents=n,
        n_links=int(off.sum()) if directed else int(off.sum()) // 2,
        directed=directed,
        agents=shown,
        groups=np.asarray(groups)[shown].astype(np.int64),
        byzantine=bad[shown],
        n_byzantine=int(bad.sum()),
        group_names=[str(g) for g in group_names],
        receivers=receivers,
        senders=senders,
        links_among_drawn=among,
        positions=None if graph.positions is None else np.asarray(graph.positions)[shown],
    )


def save_network(
    path: Path,
    graph: Graph,
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


# --------------------------------------------------------------------------------------------
# A results folder


def run_title(summary: dict[str, Any]) -> str:
    """'case: k Byzantine (attack), seed s', or 'case: no attack, seed s'."""
    if not summary:
        return ""
    byzantine = len(summary.get("byzantine") or [])
    attack = f"{byzantine} Byzantine ({summary.get('attack')})" if byzantine else "no attack"
    return f"{summary.get('case', '?')}: {attack}, seed {summary.get('seed', '?')}"


def _plot_hints(summary: dict[str, Any]) -> tuple[list[str], list[str] | None]:
    """(groups drawn as rows, log-scale candidates or None for all) from summary["plot"], else
    from the case study's class in the registry, else (none, all)."""
    hints = summary.get("plot")
    if isinstance(hints, dict):
        log = hints.get("log_metrics")
        return list(hints.get("groups") or []), None if log is None else list(log)
    from byzmtl.registry import RegistryError
    from byzmtl.tasks import CASES

    try:
        case = CASES.get(str(summary.get("case")))
    except RegistryError:  # e.g. a plugin's case study, not imported here
        return [], None
    groups = list(summary.get("groups") or []) if case.plot_groups else []
    return groups, sorted(case.log_metrics)


def _diagnostics_time(table: pd.DataFrame, summary: dict[str, Any]) -> str:
    """The column of ``table`` on the metrics' time axis (added from the round when the table
    predates it: rounds / (rounds per record))."""
    unit = str(summary.get("time_unit") or "iteration")
    if unit in table:
        return unit
    round_column = "round" if "round" in table else "iteration"
    rounds = (summary.get("diagnostics") or {}).get("rounds")
    records = summary.get("records")
    if rounds and records and rounds % records == 0:
        table[unit] = table[round_column] / (rounds // records)
        return unit
    table["round"] = table[round_column]
    return "round"


def draw_figures(
    run_dir: Path | str, formats: Sequence[str] = ("png",), band: str = "minmax"
) -> list[str]:
    """Draw figure.*, diagnostics.* and network.* of the results folder ``run_dir`` from its
    files, in every format of ``formats``. A figure that cannot be drawn (missing or broken
    file) is skipped; the return value has one line per figure skipped or drawn otherwise than
    asked (e.g. min-max bands for lack of percentile columns). Bad ``formats`` or ``band``:
    ValueError."""
    run_dir, formats = Path(run_dir), check_formats(formats)
    low, high, _ = band_columns(band)
    warnings: list[str] = []
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        if not isinstance(summary, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as error:
        warnings.append(
            f"summary.json unreadable ({failure_reason(error)}): figures without metadata"
        )
        summary = {}
    title = run_title(summary)
    rules = list(summary.get("rules") or {}) or None

    def figure() -> Figure:
        metrics = pd.read_csv(run_dir / "metrics.csv")
        names = summary.get("metrics") or [c[:-5] for c in metrics.columns if c.endswith("_mean")]
        time_name = summary.get("time_unit") or metrics.columns[2]
        chosen = band
        missing = [f"{m}_{s}" for m in names for s in (low, high) if f"{m}_{s}" not in metrics]
        if missing:
            warnings.append(f"figure: metrics.csv has no {missing[0]}; drew min-max bands")
            chosen = "minmax"
        groups, log_metrics = _plot_hints(summary)
        return metrics_figure(metrics, names, time_name, log_metrics, groups, title, chosen, rules)

    def diagnostics() -> Figure:
        table = pd.read_csv(run_dir / "diagnostics.csv")
        time_name = _diagnostics_time(table, summary)
        loss_metric = (summary.get("diagnostics") or {}).get("regret_metric")
        byzantine = len(summary["byzantine"]) if "byzantine" in summary else None
        return diagnostics_figure(table, time_name, title, loss_metric, rules, byzantine)

    def network() -> Figure:
        return network_figure(load_network(run_dir / "network.npz"), title)

    drawings: list[tuple[str, Callable[[], Figure]]] = [
        ("figure", figure),
        ("diagnostics", diagnostics),
        ("network", network),
    ]
    for name, draw in drawings:
        try:
            save_figure(draw(), run_dir / name, formats)
        except Exception as error:  # a run never fails in drawing: report, go on
            plt.close("all")
            warnings.append(f"{name}: not drawn ({failure_reason(error)})")
    return warnings


def failure_reason(error: BaseException) -> str:
    """``Error: first line of its message``, for one-line warnings."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


# --------------------------------------------------------------------------------------------
# The resilience matrix


def matrix_label(name: str, kind: str) -> str:
    """How the matrix shows a rule or attack name: attack ``none`` is "no attack", rule
    ``none`` is "none (no cooperation)", so that the two are never confused."""
    if kind == "attack" and name == NO_ATTACK:
        return NO_ATTACK_LABEL
    if kind != "attack" and name == NO_COOPERATION:
        return NO_COOPERATION_LABEL
    return name


def matrix_colours(log_ratios: np.ndarray) -> Normalize:
    """The colour scale of a heatmap of log10 factors (how many times worse than no
    cooperation): linear within a factor of 10 either way, logarithmic in the exponent beyond,
    up to the largest finite magnitude (at least 1): 26 and 1e155 stay far apart."""
    finite = np.abs(np.asarray(log_ratios, dtype=float))
    finite = finite[np.isfinite(finite)]
    top = max(1.0, float(finite.max(initial=0.0)))
    return SymLogNorm(linthresh=1.0, linscale=1.0, vmin=-top, vmax=top, base=10)


def _compact(value: float) -> str:
    """3 significant digits (all digits from 1000 on); scientific notation outside
    [1e-3, 1e4)."""
    if not np.isfinite(value):
        return "n/a" if np.isnan(value) else ("inf" if value > 0 else "-inf")
    if value != 0 and not 1e-3 <= abs(value) < 1e4:
        mantissa, exponent = f"{value:.2e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _power_of_ten(exponent: float) -> str:
    """10**exponent as a tick label: 0.01, 0.1, 1, 10, 100, then 1e3, 1e10, ..."""
    if abs(exponent - round(exponent)) > 1e-9:
        return _compact(10.0**exponent)
    power = round(exponent)
    return f"{10.0**power:g}" if -2 <= power <= 2 else f"1e{power}"


def _text_colour(rgb: Sequence[float]) -> str:
    """Black on light cells, white on dark ones (relative luminance of the cell's colour)."""
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb[:3]]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return "black" if luminance > 0.18 else "white"


def matrix_figure(
    table: pd.DataFrame,
    rules: Sequence[str],
    attacks: Sequence[str],
    metrics: Sequence[str],
    higher_is_better: Iterable[str],
    path: Path,
    title: str = "",
) -> None:
    """The resilience matrix (``byzmtl matrix``'s table): one heatmap per metric, rules x
    attacks, coloured by the log10 factor by which the rule is worse than no cooperation under
    the same attack (rule / none, or none / rule where higher is better: red worse, blue
    better; see :func:`matrix_colours`), each cell annotated with the mean and the factor."""
    higher = set(higher_is_better)
    indexed = table.set_index(["rule", "attack"])
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.8")
    fig, axes = plt.subplots(
        len(metrics),
        1,
        figsize=(1.05 * len(attacks) + 4.2, (0.48 * len(rules) + 1.9) * len(metrics)),
        squeeze=False,
        layout="constrained",
    )
    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        values = np.full((len(rules), len(attacks)), np.nan)
        ratios = np.full_like(values, np.nan)
        for i, rule in enumerate(rules):
            for j, attack in enumerate(attacks):
                row = indexed.loc[(rule, attack)]
                values[i, j], ratios[i, j] = row[f"{metric}_mean"], row[f"{metric}_vs_none"]
        with np.errstate(divide="ignore", invalid="ignore"):
            factors = 1 / ratios if metric in higher else ratios
            exponents = np.log10(factors)
        norm = matrix_colours(exponents)
        shown = np.clip(
            np.where(np.isinf(exponents), np.sign(exponents) * norm.vmax, exponents),
            norm.vmin,
            norm.vmax,
        )
        image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, norm=norm, aspect="auto")
        for i, rule in enumerate(rules):
            for j in range(len(attacks)):
                text = _compact(values[i, j])
                if rule != NO_COOPERATION and np.isfinite(values[i, j]):
                    text += f"\n×{_compact(ratios[i, j])}"
                colour = "black" if np.isnan(shown[i, j]) else _text_colour(cmap(norm(shown[i, j])))
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color=colour)
        ax.set_xticks(
            range(len(attacks)),
            [matrix_label(a, "attack") for a in attacks],
            rotation=40,
            ha="right",
            fontsize=8,
        )
        ax.set_yticks(range(len(rules)), [matrix_label(r, "rule") for r in rules], fontsize=8)
        ax.set_xlabel("attack")
        ax.set_ylabel("rule")
        worse = "none / rule" if metric in higher else "rule / none"
        ax.set_title(f"{metric}: mean over normal agents; ×: rule / none", fontsize=9)
        bar = fig.colorbar(image, ax=ax, shrink=0.9, pad=0.02)
        bar.set_label(f"times worse than no cooperation\n({worse}, log scale)", fontsize=8)
        bar.formatter = FuncFormatter(lambda x, _: _power_of_ten(x))
        bar.update_ticks()
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=DPI, format="png")
    plt.close(fig)
