"""Per-round metrics of normal agents, reduced to mean, min and max over agents.

Per-agent values are buffered on the device and reduced in blocks of rounds, so that recording
costs a few tensor operations per block rather than per round.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from byzmtl.names import NO_COOPERATION
from byzmtl.tables import Table

if TYPE_CHECKING:
    import pandas as pd

STATISTICS = ("mean", "min", "max")


def percentile_name(p: float) -> str:
    """The statistic name of percentile ``p`` (10 -> "p10", 2.5 -> "p2.5")."""
    return f"p{p:g}"


_BUFFER_VALUES = 1 << 22


def _layout(
    metrics: Sequence[str], rules: Sequence[str], subsets: Sequence[str]
) -> dict[str, list[str]]:
    """What a recorder's saved state must match to be continued."""
    return {"metrics": list(metrics), "rules": list(rules), "subsets": list(subsets)}


class Recorder:
    """Collects (R, N) per-agent metrics each recorded round; reduces them over the normal agents
    of every subset ("all" and each task group that has normal agents) to their mean, min, max
    and the ``percentiles`` asked for. From record ``final_start`` on (the final window), it
    also sums every agent's own values, for the worst agent's final-window mean (``worst``)."""

    def __init__(
        self,
        metric_names: Sequence[str],
        rule_names: Sequence[str],
        normal: np.ndarray,
        groups: np.ndarray,
        group_names: Sequence[str],
        device: torch.device | str = "cpu",
        percentiles: Sequence[float] = (),
        final_start: int | None = None,
        higher_is_better: frozenset[str] = frozenset(),
    ) -> None:
        self.metric_names, self.rule_names = tuple(metric_names), list(rule_names)
        self.statistics = (*STATISTICS, *(percentile_name(p) for p in percentiles))
        self._quantiles = torch.tensor([p / 100 for p in percentiles], dtype=torch.float64)
        subsets = [("all", np.flatnonzero(normal))]
        for g, name in enumerate(group_names):
            members = np.flatnonzero(normal & (groups == g))
            if len(members):
                subsets.append((name, members))
        self.subset_names = [name for name, _ in subsets]
        self._subsets = [torch.as_tensor(m, device=device) for _, m in subsets]
        self._buffer: list[dict[str, Tensor]] = []
        self._blocks: list[dict[str, np.ndarray]] = []
        self._count = 0
        self._final_start, self._higher = final_start, higher_is_better
        self._final_sums: dict[str, Tensor] = {}
        self._final_records = 0

    def add(self, metrics: dict[str, Tensor]) -> None:
        """Record one round: name -> (R, N) per-agent values."""
        if self._final_start is not None and self._count >= self._final_start:
            for name in self.metric_names:
                total = self._final_sums.get(name)
                self._final_sums[name] = metrics[name].double() + (0 if total is None else total)
            self._final_records += 1
        self._count += 1
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
                if len(self._quantiles):
                    q = torch.quantile(part, self._quantiles.to(part.device, part.dtype), 2)
                    stats[-1] = torch.cat([stats[-1], q.movedim(0, -1)], -1)
            block[name] = torch.stack(stats, 2).double().cpu().numpy()  # (K, R, S, statistics)
        self._blocks.append(block)
        self._buffer = []

    @property
    def n_records(self) -> int:
        return self._count

    def state_dict(self) -> dict[str, Any]:
        """Everything recorded so far, exactly as held (buffered rounds unreduced, so that a
        recorder restored by :meth:`load_state_dict` reduces the same blocks as one that never
        stopped), as tensors, lists and numbers (for ``torch.save``, ``weights_only`` loading)."""
        return {
            "layout": _layout(self.metric_names, self.rule_names, self.subset_names),
            "statistics": list(self.statistics),
            "count": self._count,
            "buffer": list(self._buffer),
            "blocks": [
                {n: torch.from_numpy(b[n]) for n in self.metric_names} for b in self._blocks
            ],
            "final_sums": dict(self._final_sums),
            "final_records": self._final_records,
        }

    def load_state_dict(self, record: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` of a recorder built the same way (ValueError if its
        metrics, rules, subsets or statistics differ)."""
        layout = _layout(self.metric_names, self.rule_names, self.subset_names)
        if record["layout"] != layout or record["statistics"] != list(self.statistics):
            raise ValueError("the recorded metrics belong to another run (metrics, rules, groups)")
        self._count = int(record["count"])
        self._buffer = list(record["buffer"])
        self._blocks = [{n: b[n].numpy() for n in self.metric_names} for b in record["blocks"]]
        self._final_sums = dict(record["final_sums"])
        self._final_records = int(record["final_records"])

    def worst(self) -> dict[str, np.ndarray] | None:
        """name -> (rules, subsets): the final-window mean of the worst normal agent of each
        subset (the largest, or the smallest for metrics where higher is better); None before
        the final window."""
        if not self._final_records:
            return None
        out = {}
        for name, total in self._final_sums.items():
            mean = total / self._final_records  # (R, N)
            pick = torch.amin if name in self._higher else torch.amax
            out[name] = torch.stack(
                [pick(mean.index_select(1, members), 1) for members in self._subsets], 1
            )
        return {name: value.cpu().numpy() for name, value in out.items()}

    def arrays(self) -> dict[str, np.ndarray]:
        """name -> (records, rules, subsets, statistics): mean, min, max, then percentiles."""
        self._flush()
        if not self._blocks:
            empty = (0, len(self.rule_names), len(self.subset_names), len(self.statistics))
            return {name: np.zeros(empty) for name in self.metric_names}
        return {n: np.concatenate([b[n] for b in self._blocks]) for n in self.metric_names}

    def table(self, time_name: str, time_values: np.ndarray) -> pd.DataFrame:
        """Long table: one row per (rule, group, time) with <metric>_<statistic> columns."""
        return self.columns(time_name, time_values).frame()

    def columns(self, time_name: str, time_values: np.ndarray) -> Table:
        """:meth:`table`'s columns (metrics.csv), without pandas."""
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
            ordered = values.transpose(1, 2, 0, 3).reshape(-1, len(self.statistics))
            for s, stat in enumerate(self.statistics):
                columns[f"{name}_{stat}"] = ordered[:, s]
        return Table(columns)


DIAGNOSTICS = (
    "byzantine_weight_mean",
    "byzantine_weight_max",
    "own_task_weight_mean",
    "own_task_weight_min",
    "regret_mean",
    "regret_max",
)


class WeightSums:
    """Per-receiver sums of one rule's edge weights c_lk, for the receivers a..b-1 of edges
    given in one numbering of the agents (the whole graph's ids, or a rank's table rows, in
    which its own agents are a..b-1; ``normal`` and ``groups`` in the same numbering):

        b_k = sum over Byzantine l in N_k of c_lk,
        o_k = sum over normal l in N_k of k's task group of c_lk (k included),

    for normal k (0 for the others), each summed in edge order, so that a rank's sums are the
    whole graph's rows of its receivers, bit for bit."""

    def __init__(
        self,
        receivers: np.ndarray,
        senders: np.ndarray,
        normal: np.ndarray,
        groups: np.ndarray,
        agents: slice,
        device: torch.device | str = "cpu",
    ) -> None:
        to_normal = normal[receivers]
        byzantine = np.flatnonzero(to_normal & ~normal[senders])
        own = np.flatnonzero(to_normal & normal[senders] & (groups[receivers] == groups[senders]))

        def tensor(values: np.ndarray) -> Tensor:
            return torch.as_tensor(values, dtype=torch.long, device=device)

        first = agents.start
        self._byzantine, self._byzantine_to = (
            tensor(byzantine),
            tensor(receivers[byzantine] - first),
        )
        self._own, self._own_to = tensor(own), tensor(receivers[own] - first)
        self.n_agents, self.n_edges = agents.stop - first, len(receivers)

    def __call__(self, weights: Tensor) -> Tensor:
        """(K, R, 2, b - a): b_k and o_k of (K, R, E) weights (NaN where a rule has none)."""
        sums = [
            self._per_receiver(weights, self._byzantine, self._byzantine_to),
            self._per_receiver(weights, self._own, self._own_to),
        ]
        return torch.stack(sums, 2)

    def _per_receiver(self, weights: Tensor, edges: Tensor, receivers: Tensor) -> Tensor:
        totals = weights.new_zeros((*weights.shape[:2], self.n_agents))
        return totals.index_add_(2, receivers, weights.index_select(2, edges))

    def of_round(self, weights: Sequence[Tensor | None]) -> Tensor | None:
        """(R, 2, b - a) sums of one round's weights (one (E,) tensor or None per rule); None
        when no rule has weights."""
        return None if (block := stacked_weights([weights])) is None else self(block)[0]


def stacked_weights(block: Sequence[Sequence[Tensor | None]]) -> Tensor | None:
    """(K, R, E) weights of K rounds, NaN for a rule without; None when no rule has any."""
    template = next((w for ws in block for w in ws if w is not None), None)
    if template is None:
        return None
    missing = template.new_full(template.shape, torch.nan)
    flat = [missing if w is None else w for ws in block for w in ws]
    return torch.stack(flat).view(len(block), len(block[0]), -1)


class Diagnostics:
    """What each rule does with its weights, and what cooperation costs or gains, per round.

    For every rule and normal agent k, each round (from the rule's edge weights c_lk):

        byzantine weight  b_k = sum over Byzantine l in N_k of c_lk,
        own-task weight   o_k = sum over normal l in N_k of k's task group of c_lk (k included),

    reduced to the mean and max of b_k and the mean and min of o_k over normal agents; rules
    without edge weights record NaN. At every recorded round t (when the task reports metrics;
    per epoch in the learning case studies), with L the case study's loss metric,

        regret    R_k(t) = sum over records s <= t of L_k^rule(s) - L_k^none(s),

    the cumulative excess loss of agent k over the no-cooperation replica of the same run (same
    seed, data and attackers), reduced to its mean and max over normal agents. Regret needs the
    ``none`` rule in the run (it is in the default set) and the loss metric; otherwise it is NaN.

    Time: rows are rounds. With ``time_unit`` "iteration" (one round per iteration) the round is
    the ``iteration`` column. With another unit (``epoch`` in the learning case studies) the
    table has a ``round`` column and a ``<time_unit>`` column on the metrics' time axis: the
    time of round r (1-based) is interpolated linearly through (0, 0) and the records' points
    (round, ``record_times[i]``), so with T rounds per epoch round r is at epoch r / T, each
    record at its own epoch, and diagnostics and metrics share one axis.

    Rounds only append references to buffers; the reductions run in blocks of rounds.
    """

    def __init__(
        self,
        receivers: np.ndarray | None,
        senders: np.ndarray | None,
        normal: np.ndarray,
        groups: np.ndarray,
        rule_names: Sequence[str],
        loss_metric: str | None,
        device: torch.device | str = "cpu",
        time_unit: str = "iteration",
        record_times: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        self.rule_names = list(rule_names)
        self.time_unit = time_unit
        self.round_column = "iteration" if time_unit == "iteration" else "round"
        self._record_times = None if record_times is None else np.asarray(record_times, float)
        names = self.rule_names
        self.reference = names.index(NO_COOPERATION) if NO_COOPERATION in names else None
        self.loss_metric = loss_metric if self.reference is not None else None
        self._graph = (receivers, senders, normal, groups, device)  # for the sums, if needed
        self._sums: WeightSums | None = None  # built on first use: a partitioned run's ranks
        # give sums (add_sums), and the whole graph's index lists would cost 16 B per edge
        self._normal = torch.as_tensor(np.flatnonzero(normal), dtype=torch.long, device=device)
        self._n_agents = len(normal)
        self._n_edges = 0 if receivers is None else len(receivers)
        self._weights: list[Sequence[Tensor | None]] = []
        self._totals: list[Tensor | None] = []  # rounds given as sums (add_sums)
        self._recorded: list[int] = []  # rounds at which the task reported metrics
        self._losses: list[tuple[int, Tensor]] = []
        self._rounds: list[np.ndarray] = []  # blocks of (K, R, 4)
        self._records: list[tuple[np.ndarray, np.ndarray]] = []  # (rounds, (K, R, 2)) blocks
        self._regret: Tensor | None = None  # (R, normal agents) cumulative excess loss

    def add(self, round_index: int, weights: Sequence[Tensor | None], metrics: Any) -> None:
        """Record round ``round_index`` (0-based): one (E,) weight tensor (or None) per rule,
        and the round's metrics (name -> (R, N)) or None. Needs the graph's edges (given
        None, the diagnostics take sums only: :meth:`add_sums`)."""
        if self._graph[0] is None:
            raise ValueError("these diagnostics were given no edges: record sums (add_sums)")
        self._weights.append(weights)
        self._add_metrics(round_index, metrics)
        if len(self._weights) * len(weights) * self._n_edges >= _BUFFER_VALUES:
            self._flush()

    def add_sums(self, round_index: int, sums: Tensor | None, metrics: Any) -> None:
        """Record round ``round_index`` from its :class:`WeightSums` of the whole graph,
        (R, 2, N) or None (no rule has weights), as a partitioned run's ranks gather them:
        the same records as :meth:`add` of the weights."""
        self._totals.append(sums)
        self._add_metrics(round_index, metrics)
        if len(self._totals) * len(self.rule_names) * 2 * self._n_agents >= _BUFFER_VALUES:
            self._flush()

    def _add_metrics(self, round_index: int, metrics: Any) -> None:
        if metrics is not None:
            self._recorded.append(round_index)
        if metrics is not None and self.loss_metric is not None and self.loss_metric in metrics:
            self._losses.append((round_index, metrics[self.loss_metric]))

    def _flush(self) -> None:
        if self._weights:
            if self._sums is None:
                receivers, senders, normal, groups, device = self._graph
                assert receivers is not None and senders is not None  # add() checks
                every = slice(0, self._n_agents)
                self._sums = WeightSums(receivers, senders, normal, groups, every, device)
            block = stacked_weights(self._weights)
            sums = None if block is None else self._sums(block)
            self._rounds.append(self._statistics(sums, len(self._weights)))
            self._weights = []
        if self._totals:
            given = [t for t in self._totals if t is not None]
            sums = torch.stack(given) if len(given) == len(self._totals) else None
            self._rounds.append(self._statistics(sums, len(self._totals)))
            self._totals = []
        if self._losses:
            rounds = np.array([r for r, _ in self._losses])
            # on the host: CUDA has no deterministic cumsum (see byzmtl.determinism)
            loss = torch.stack([m for _, m in self._losses]).index_select(2, self._normal).cpu()
            assert self.reference is not None  # losses are kept only with a reference
            excess = (loss - loss[:, self.reference : self.reference + 1]).cumsum(0)
            if self._regret is not None:
                excess += self._regret
            self._regret = excess[-1]
            stats = torch.stack([excess.mean(2), excess.amax(2)], -1)
            self._records.append((rounds, stats.double().numpy()))
            self._losses = []

    def _statistics(self, sums: Tensor | None, rounds: int) -> np.ndarray:
        """(K, R, 4) byzantine mean, max, own-task mean, min over normal agents, from K rounds
        of (K, R, 2, N) :class:`WeightSums` (None: no rule has weights)."""
        if sums is None:
            return np.full((rounds, len(self.rule_names), 4), np.nan)
        normal = sums.index_select(3, self._normal)
        byzantine, own = normal[:, :, 0].contiguous(), normal[:, :, 1].contiguous()
        stats = [byzantine.mean(2), byzantine.amax(2), own.mean(2), own.amin(2)]
        return torch.stack(stats, -1).double().cpu().numpy()

    def state_dict(self) -> dict[str, Any]:
        """Everything recorded so far, exactly as held (buffered rounds unreduced, the regret
        carried so far), as tensors, lists and numbers; see :meth:`load_state_dict`."""
        return {
            "layout": _layout((), self.rule_names, ()),
            "edges": self._n_edges,
            "weights": [list(weights) for weights in self._weights],
            "totals": list(self._totals),
            "recorded": list(self._recorded),
            "losses": [[r, loss] for r, loss in self._losses],
            "rounds": [torch.from_numpy(block) for block in self._rounds],
            "records": [[torch.from_numpy(r), torch.from_numpy(v)] for r, v in self._records],
            "regret": self._regret,
        }

    def load_state_dict(self, record: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` of diagnostics built the same way (ValueError if
        the rules or the number of edges differ)."""
        if record["layout"] != _layout((), self.rule_names, ()) or record["edges"] != self._n_edges:
            raise ValueError("the recorded diagnostics belong to another run (rules, edges)")
        self._weights = [list(weights) for weights in record["weights"]]
        self._totals = list(record.get("totals", []))
        self._recorded = [int(r) for r in record["recorded"]]
        self._losses = [(int(r), loss) for r, loss in record["losses"]]
        self._rounds = [block.numpy() for block in record["rounds"]]
        self._records = [(r.numpy(), v.numpy()) for r, v in record["records"]]
        self._regret = record["regret"]

    def table(self) -> pd.DataFrame:
        """Long table: one row per (rule, round) with the round (from 1; see the class docstring
        for the time columns) and the columns of ``DIAGNOSTICS``; regret columns are NaN on
        rounds without a record."""
        return self.columns().frame()

    def columns(self) -> Table:
        """:meth:`table`'s columns (diagnostics.csv), without pandas."""
        self._flush()
        rules = len(self.rule_names)
        per_round = np.concatenate(self._rounds) if self._rounds else np.zeros((0, rules, 4))
        rounds = len(per_round)
        values = np.full((rounds, rules, len(DIAGNOSTICS)), np.nan)
        values[:, :, :4] = per_round
        for recorded, stats in self._records:
            values[recorded, :, 4:] = stats
        ordered = values.transpose(1, 0, 2).reshape(-1, len(DIAGNOSTICS))
        numbers = np.arange(1, rounds + 1)
        columns: dict[str, object] = {
            "rule": np.repeat(self.rule_names, rounds),
            self.round_column: np.tile(numbers, rules),
        }
        if self.round_column != "iteration":
            columns[self.time_unit] = np.tile(self.round_times(numbers), rules)
        for c, name in enumerate(DIAGNOSTICS):
            columns[name] = ordered[:, c]
        return Table(columns)

    def round_times(self, rounds: np.ndarray) -> np.ndarray:
        """The time (in ``time_unit``) of each 1-based round: linear through (0, 0) and the
        records' (round, time) points, extended past the last record along its last step;
        rounds themselves without ``record_times``, NaN where nothing was recorded yet."""
        rounds = np.asarray(rounds, dtype=float)
        if self._record_times is None:
            return rounds
        known_rounds = np.concatenate([[0.0], np.asarray(self._recorded, float) + 1])
        known_times = np.concatenate([[0.0], self._record_times[: len(self._recorded)]])
        if len(known_rounds) < 2:
            return np.full_like(rounds, np.nan)
        times = np.interp(rounds, known_rounds, known_times)
        beyond = rounds > known_rounds[-1]
        step = (known_times[-1] - known_times[-2]) / (known_rounds[-1] - known_rounds[-2])
        times[beyond] = known_times[-1] + step * (rounds[beyond] - known_rounds[-1])
        return times

    def summary(
        self, final_fraction: float, table: Table | pd.DataFrame | None = None
    ) -> dict[str, dict[str, Any]]:
        """Per rule: the weight diagnostics averaged over the rounds of the metrics' final
        window (the last ``final_fraction`` of records, at least one: e.g. the last 50
        iterations, or every round of the last epoch), and the regret at the last record (None
        where not measured). ``table``: this recorder's :meth:`columns` (or :meth:`table`), if
        already made. Means skip NaN, summed as pandas sums them (:func:`_mean`)."""
        table = self.columns() if table is None else table
        rule_column = np.asarray(table["rule"])
        rounds = np.asarray(table[self.round_column])
        records = len(self._recorded)
        window = max(1, round(final_fraction * records))
        first = self._recorded[-window - 1] + 1 if records > window else 0
        out: dict[str, dict[str, Any]] = {}
        for rule in self.rule_names:
            rows = rule_column == rule
            tail = rows & (rounds > first)
            regret = np.asarray(table["regret_mean"])
            recorded = np.flatnonzero(rows & ~np.isnan(regret))[-1:]

            def final(column: str, part: np.ndarray) -> float | None:
                value = _mean(np.asarray(table[column])[part])
                return None if np.isnan(value) else value

            out[rule] = {
                "byzantine_weight": {
                    "mean": final("byzantine_weight_mean", tail),
                    "max": final("byzantine_weight_max", tail),
                },
                "own_task_weight": {
                    "mean": final("own_task_weight_mean", tail),
                    "min": final("own_task_weight_min", tail),
                },
                "regret": {
                    "mean": final("regret_mean", recorded),
                    "max": final("regret_max", recorded),
                },
            }
        return out


def _mean(values: np.ndarray) -> float:
    """The mean of the values that are not NaN (NaN when none is), bit for bit as pandas'
    ``Series.mean`` computes it: NaN set to 0, numpy's pairwise sum, divided by the count."""
    values = np.asarray(values, dtype=np.float64)
    missing = np.isnan(values)
    count = len(values) - int(missing.sum())
    if not count:
        return float("nan")
    return float(np.where(missing, 0.0, values).sum() / count)
