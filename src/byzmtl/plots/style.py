"""What every figure shares: the y scale of a panel, the colours and markers of rules, the
bands of a metric, and the notes and legend around the panels.

Scales come from the data of each panel (:func:`axis_scale`): log where positive data span more
than a decade, symlog where data with zeros or negatives do, linear otherwise; non-finite values
are left out, and the panel says so (:func:`finite`, :func:`note`). Colours: every rule its own
(the paper's for its four rules; a continuous colormap beyond 20 rules).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from byzmtl.names import NO_COOPERATION

RULE_COLOURS = {
    "loss": "tab:blue",
    "distance": "tab:orange",
    "average": "tab:green",
    NO_COOPERATION: "tab:gray",
}

MARKERS = ("o", "s", "^", "D", "v", "P", "*", "h", "<", ">")

Scale = tuple[str, dict[str, float]]


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


def apply_scale(ax: plt.Axes, values: np.ndarray, allow_log: bool) -> None:
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


def mean_line(ax: plt.Axes, t: np.ndarray, y: np.ndarray, colour: Any, index: int) -> None:
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


def rule_handle(colour: Any, index: int, label: str) -> Line2D:
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


def finite(values: pd.Series | np.ndarray) -> tuple[np.ndarray, int]:
    """Values as floats with infinities made NaN (so they are not drawn), and how many were
    not finite."""
    data = np.asarray(values, dtype=float).copy()
    bad = ~np.isfinite(data)
    data[bad] = np.nan
    return data, int(np.count_nonzero(bad))


def note(ax: plt.Axes, text: str, alarm: bool = False) -> None:
    """A line of text in the panel's top left corner (red for values left out)."""
    colour = "tab:red" if alarm else "0.3"
    ax.text(0.01, 0.99, text, transform=ax.transAxes, ha="left", va="top", fontsize=7, color=colour)


def legend_below(fig: Figure, handles: list[Any]) -> None:
    """One legend in rows below the panels, outside every axes (never over a curve)."""
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=min(len(handles), 7),
        frameon=False,
        fontsize="small",
    )
