"""Redrawing a results folder from its files alone (``byzmtl plot``), every figure on its own:
one that cannot be drawn is reported and skipped.

Metadata comes from summary.json: the time unit, metric names, rules in order, the title, and the
``plot`` hints ``{"groups": [...], "log_metrics": [...]}`` (groups drawn as rows, metrics that
may be drawn on a log scale); a summary without them takes the case study's class attributes
from the registry, else plots every metric as a log candidate and only the "all" row.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from byzmtl.names import run_title
from byzmtl.plots.curves import metrics_figure
from byzmtl.plots.diagnostics import diagnostics_figure
from byzmtl.plots.network import load_network, network_figure
from byzmtl.plots.saving import check_formats, save_figure
from byzmtl.plots.style import band_columns


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


FIGURES = ("figure", "diagnostics", "network")


def draw_figures(
    run_dir: Path | str,
    formats: Sequence[str] = ("png",),
    band: str = "minmax",
    names: Sequence[str] = FIGURES,
) -> list[str]:
    """Draw the figures ``names`` (of figure.*, diagnostics.* and network.*) of the results
    folder ``run_dir`` from its files, in every format of ``formats``. A figure that cannot be
    drawn (missing or broken file) is skipped; the return value has one line per figure
    skipped or drawn otherwise than asked (e.g. min-max bands for lack of percentile columns).
    Bad ``formats``, ``band`` or ``names``: ValueError."""
    run_dir, formats = Path(run_dir), check_formats(formats)
    unknown = [name for name in names if name not in FIGURES]
    if unknown:
        raise ValueError(f"figure: {unknown[0]!r} is not one of {', '.join(FIGURES)}")
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
        shown = summary.get("metrics") or [c[:-5] for c in metrics.columns if c.endswith("_mean")]
        time_name = summary.get("time_unit") or metrics.columns[2]
        chosen = band
        missing = [f"{m}_{s}" for m in shown for s in (low, high) if f"{m}_{s}" not in metrics]
        if missing:
            warnings.append(f"figure: metrics.csv has no {missing[0]}; drew min-max bands")
            chosen = "minmax"
        groups, log_metrics = _plot_hints(summary)
        return metrics_figure(metrics, shown, time_name, log_metrics, groups, title, chosen, rules)

    def diagnostics() -> Figure:
        table = pd.read_csv(run_dir / "diagnostics.csv")
        time_name = _diagnostics_time(table, summary)
        loss_metric = (summary.get("diagnostics") or {}).get("regret_metric")
        byzantine = len(summary["byzantine"]) if "byzantine" in summary else None
        return diagnostics_figure(table, time_name, title, loss_metric, rules, byzantine)

    def network() -> Figure:
        return network_figure(load_network(run_dir / "network.npz"), title)

    drawings: dict[str, Callable[[], Figure]] = {
        "figure": figure,
        "diagnostics": diagnostics,
        "network": network,
    }
    for name in names:
        draw = drawings[name]
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
