"""Per-round metrics of normal agents, reduced to mean, min and max over agents.

Per-agent values are buffered on the device and reduced in blocks of rounds, so that recording
costs a few tensor operations per block rather than per round.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

STATISTICS = ("mean", "min", "max")
_BUFFER_VALUES = 1 << 22


class Recorder:
    """Collects (R, N) per-agent metrics each recorded round; reduces them over the normal agents
    of every subset ("all" and each task group that has normal agents)."""

    def __init__(
        self,
        metric_names: Sequence[str],
        rule_names: Sequence[str],
        normal: np.ndarray,
        groups: np.ndarray,
        group_names: Sequence[str],
        device: torch.device | str = "cpu",
    ) -> None:
        self.metric_names, self.rule_names = tuple(metric_names), list(rule_names)
        subsets = [("all", np.flatnonzero(normal))]
        for g, name in enumerate(group_names):
            members = np.flatnonzero(normal & (groups == g))
            if len(members):
                subsets.append((name, members))
        self.subset_names = [name for name, _ in subsets]
        self._subsets = [torch.as_tensor(m, device=device) for _, m in subsets]
        self._buffer: list[dict[str, Tensor]] = []
        self._blocks: list[dict[str, np.ndarray]] = []

    def add(self, metrics: dict[str, Tensor]) -> None:
        """Record one round: name -> (R, N) per-agent values."""
        self._buffer.append(metrics)
        first = metrics[self.metric_names[0]]
        if len(self._buffer) * first.numel() >= _BUFFER_VALUES:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        block: dict[str, np.ndarray] = {}
        for name in self.metric_names:
            values = torch.stack([m[name] for m in self._buffer])  # (K, R, N)
            stats = []
            for members in self._subsets:
                part = values.index_select(2, members)
                stats.append(torch.stack([part.mean(2), part.amin(2), part.amax(2)], -1))
            block[name] = torch.stack(stats, 2).double().cpu().numpy()  # (K, R, S, 3)
        self._blocks.append(block)
        self._buffer = []

    @property
    def n_records(self) -> int:
        return sum(len(b[self.metric_names[0]]) for b in self._blocks) + len(self._buffer)

    def arrays(self) -> dict[str, np.ndarray]:
        """name -> (records, rules, subsets, 3 statistics)."""
        self._flush()
        if not self._blocks:
            empty = (0, len(self.rule_names), len(self.subset_names), len(STATISTICS))
            return {name: np.zeros(empty) for name in self.metric_names}
        return {n: np.concatenate([b[n] for b in self._blocks]) for n in self.metric_names}

    def table(self, time_name: str, time_values: np.ndarray) -> pd.DataFrame:
        """Long table: one row per (rule, group, time) with <metric>_<statistic> columns."""
        arrays = self.arrays()
        records = len(next(iter(arrays.values())))
        rules, subsets = len(self.rule_names), len(self.subset_names)
        index = np.indices((rules, subsets, records)).reshape(3, -1)
        columns: dict[str, object] = {
            "rule": np.asarray(self.rule_names)[index[0]],
            "group": np.asarray(self.subset_names)[index[1]],
            time_name: np.asarray(time_values)[:records][index[2]],
        }
        for name, values in arrays.items():
            ordered = values.transpose(1, 2, 0, 3).reshape(-1, len(STATISTICS))
            for s, stat in enumerate(STATISTICS):
                columns[f"{name}_{stat}"] = ordered[:, s]
        return pd.DataFrame(columns)
