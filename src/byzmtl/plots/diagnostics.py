"""diagnostics.*: weight on Byzantine senders, weight on own-task senders and regret against no
cooperation, per rule over time."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from byzmtl.plots.style import (
    apply_scale,
    finite,
    legend_below,
    mean_line,
    note,
    rule_colours,
    rule_handle,
)

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
            mean, bad_mean = finite(rows[f"{name}_mean"])
            extreme, bad_extreme = finite(rows[f"{name}_{worst}"])
            hidden += bad_mean + bad_extreme
            mean_line(ax, t, mean, colours[rule], rules.index(rule))
            ax.plot(t, extreme, color=colours[rule], lw=0.8, ls="--")
            drawn.extend([mean, extreme])
        values = np.concatenate(drawn) if drawn else np.array([])
        apply_scale(ax, values, allow_log=name == "regret")
        if not np.isfinite(values).any():
            reason = "no rule with weights" if name != "regret" else "not measured (no 'none')"
            note(ax, reason)
        elif hidden:
            note(ax, f"{hidden} non-finite values not drawn", alarm=True)
        elif name == "byzantine_weight" and byzantine == 0:
            note(ax, "no Byzantine agents in this run")
        ax.set_title(heading, fontsize="medium")
        ax.set_xlabel(time_name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
        ax.set_ylabel(f"{unit} ({loss_metric})" if name == "regret" and loss_metric else unit)
        ax.grid(True, which="major", alpha=0.3)
    handles = [rule_handle(colours[r], i, r) for i, r in enumerate(rules)]
    handles.append(Line2D([], [], color="k", lw=1.5, label="mean over normal agents"))
    handles.append(Line2D([], [], color="k", lw=0.8, ls="--", label="worst normal agent"))
    legend_below(fig, handles)
    if title:
        fig.suptitle(title)
    return fig
