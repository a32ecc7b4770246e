"""The outcome of a run: :class:`Result` (tables, summary, and what produced them) and
:func:`summarise`, which reduces a finished run's records to summary.json."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from byzmtl.config import RunConfig
from byzmtl.engine import SimState
from byzmtl.recording import Diagnostics, Recorder
from byzmtl.rules import NO_COOPERATION
from byzmtl.tables import Table
from byzmtl.version import __version__

if TYPE_CHECKING:
    import pandas as pd

    from byzmtl.experiment import Experiment


@dataclass
class Result:
    """The outcome of a run: the metrics table, the summary, and what produced them."""

    config: RunConfig
    metrics_table: Table  # metrics.csv's columns
    summary: dict[str, Any]
    experiment: Experiment
    state: SimState  # the final state; a partitioned run's rank: its part (see ``run``)
    diagnostics_table: Table | None = None  # per round: see byzmtl.recording.Diagnostics

    @cached_property
    def metrics(self) -> pd.DataFrame:
        """The metrics as a pandas DataFrame (built on first use)."""
        return self.metrics_table.frame()

    @cached_property
    def diagnostics(self) -> pd.DataFrame | None:
        """The diagnostics as a pandas DataFrame (built on first use), if recorded."""
        return None if self.diagnostics_table is None else self.diagnostics_table.frame()

    def final(self, rule: str, metric: str, statistic: str = "mean", group: str = "all") -> float:
        """The summary's final value of ``metric`` under ``rule`` (see README, results format)."""
        node = self.summary["rules"][rule]
        if group != "all":
            node = node["groups"][group]
        return float(node["final"][metric][statistic])

    def save(self, out: str | Path, overwrite: bool = False) -> Path:
        """Write the results folder atomically (see :mod:`byzmtl.results`)."""
        from byzmtl.results import write_results

        return write_results(self, Path(out), overwrite)


def identity(experiment: Experiment) -> dict[str, Any]:
    """What names a run in its summary (and in its figures' titles): case, seed, attack and
    the Byzantine agents."""
    return {
        "case": experiment.case.name,
        "seed": experiment.config.seed,
        "attack": experiment.config.attack,
        "byzantine": experiment.byzantine.tolist(),
    }


def summarise(
    experiment: Experiment,
    contained: Tensor | None,
    recorder: Recorder,
    diagnostics: Diagnostics,
    table: Table,
    wall: float,
    compute: float,
) -> dict:
    """summary.json of a finished run: for every rule (and group) the final-window mean of every
    recorded statistic (``final``; ``worst``: the worst normal agent's own final-window mean),
    its diagnostics and containment counts (``contained``: the whole network's, (R, 2), None
    where nothing was contained); the run's identity, sizes, timings and versions."""
    case = experiment.case
    diagnosed = diagnostics.summary(case.final_fraction, table)
    arrays = recorder.arrays()
    records = recorder.n_records
    window = max(1, round(case.final_fraction * records))
    counts = (
        np.zeros((len(recorder.rule_names), 2), dtype=np.int64)
        if contained is None
        else contained.cpu().numpy()
    )
    worst = recorder.worst() if records else None
    rules: dict[str, Any] = {}
    for r, rule in enumerate(recorder.rule_names):
        per_subset: dict[str, Any] = {}
        for s, subset in enumerate(recorder.subset_names):
            per_subset[subset] = {}
            for metric, values in arrays.items():
                final = {
                    stat: float(np.mean(values[-window:, r, s, i]))
                    for i, stat in enumerate(recorder.statistics)
                }
                if worst is not None:
                    final["worst"] = float(worst[metric][r, s])
                per_subset[subset][metric] = final
        entry: dict[str, Any] = {"final": per_subset.pop("all")}
        if per_subset:
            entry["groups"] = {name: {"final": value} for name, value in per_subset.items()}
        entry["diagnostics"] = diagnosed[rule]
        entry["contained"] = {
            "local_steps": int(counts[r, 0]),
            "combinations": int(counts[r, 1]),
        }
        rules[rule] = entry
    return {
        **identity(experiment),
        "agents": experiment.graph.n_agents,
        "agent_groups": [
            case.group_names[g] if g < len(case.group_names) else str(g)
            for g in experiment.groups.tolist()
        ],
        "edges": experiment.graph.n_edges,
        "time_unit": case.time_unit,
        "records": records,
        "final_window": window,
        "metrics": list(case.metric_names),
        "groups": list(case.group_names),
        "plot": {
            "groups": list(case.group_names) if case.plot_groups else [],
            "log_metrics": sorted(case.log_metrics),
        },
        "diagnostics": {
            "regret_reference": None if diagnostics.reference is None else NO_COOPERATION,
            "regret_metric": diagnostics.loss_metric,
            "rounds": case.n_rounds,
        },
        "wall_seconds": wall,
        "compute_seconds": compute,
        "versions": {
            "byzmtl": __version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "rules": rules,
    }
