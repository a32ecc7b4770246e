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

and :func:`matrix_figure` draws ``byzmtl matrix``'s heatmaps. One module per job:

- :mod:`~byzmtl.plots.style`: panel scales, rule colours and markers, bands, notes, legends;
- :mod:`~byzmtl.plots.saving`: the formats, and writing a figure file whole or not at all;
- :mod:`~byzmtl.plots.curves` (figure.*), :mod:`~byzmtl.plots.diagnostics` (diagnostics.*),
  :mod:`~byzmtl.plots.network` (network.* and network.npz), :mod:`~byzmtl.plots.heatmap`
  (matrix.png): one figure each;
- :mod:`~byzmtl.plots.redraw`: a results folder's figures from its files.

Every public name of these modules is importable from ``byzmtl.plots``.
"""

import matplotlib

matplotlib.use("Agg")  # files only, never a window: before any module imports pyplot

from byzmtl.plots.curves import metrics_figure
from byzmtl.plots.diagnostics import DIAGNOSTIC_PANELS, diagnostics_figure
from byzmtl.plots.heatmap import (
    NO_ATTACK_LABEL,
    NO_COOPERATION_LABEL,
    matrix_colours,
    matrix_figure,
    matrix_label,
)
from byzmtl.plots.network import (
    MAX_CATEGORICAL_GROUPS,
    MAX_DRAWN_AGENTS,
    MAX_DRAWN_LINKS,
    Network,
    load_network,
    network_figure,
    network_of,
    save_network,
)
from byzmtl.plots.redraw import draw_figures, failure_reason, run_title
from byzmtl.plots.saving import DPI, FORMATS, check_formats, save_figure
from byzmtl.plots.style import MARKERS, RULE_COLOURS, Scale, axis_scale, band_columns, rule_colours

__all__ = [
    "DIAGNOSTIC_PANELS",
    "DPI",
    "FORMATS",
    "MARKERS",
    "MAX_CATEGORICAL_GROUPS",
    "MAX_DRAWN_AGENTS",
    "MAX_DRAWN_LINKS",
    "NO_ATTACK_LABEL",
    "NO_COOPERATION_LABEL",
    "RULE_COLOURS",
    "Network",
    "Scale",
    "axis_scale",
    "band_columns",
    "check_formats",
    "diagnostics_figure",
    "draw_figures",
    "failure_reason",
    "load_network",
    "matrix_colours",
    "matrix_figure",
    "matrix_label",
    "metrics_figure",
    "network_figure",
    "network_of",
    "rule_colours",
    "run_title",
    "save_figure",
    "save_network",
]
