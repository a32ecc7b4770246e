"""figure.*: the metrics over time, one panel per metric and row of agents, a mean line and a
band per rule."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from byzmtl.plots.style import (
    apply_scale,
    band_columns,
    finite,
    legend_below,
    mean_line,
    note,
    rule_colours,
    rule_handle,
)


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
                mean, bad_mean = finite(lines[f"{metric}_mean"])
                lo, bad_lo = finite(lines[f"{metric}_{low}"])
                hi, bad_hi = finite(lines[f"{metric}_{high}"])
                hidden += bad_mean + bad_lo + bad_hi
                mean_line(ax, t, mean, colours[rule], rules.index(rule))
                ax.fill_between(t, lo, hi, color=colours[rule], alpha=0.18, lw=0)
                drawn.extend([mean, lo, hi])
            allow_log = log_metrics is None or metric in set(log_metrics)
            apply_scale(ax, np.concatenate(drawn) if drawn else np.array([]), allow_log)
            if hidden:
                note(ax, f"{hidden} non-finite values not drawn", alarm=True)
            ax.set_xlabel(time_name)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
            ax.set_ylabel(metric if group == "all" else f"{metric} ({group})")
            ax.grid(True, which="major", alpha=0.3)
    handles: list[Artist] = [rule_handle(colours[r], i, r) for i, r in enumerate(rules)]
    handles.append(Patch(color="0.5", alpha=0.3, label=band_text))
    legend_below(fig, handles)
    if title:
        fig.suptitle(title)
    return fig
