"""Per-round metrics of normal agents, reduced to mean, min and max over agents.

Per-agent values are buffered on the device and reduced in blocks of rounds, so that recording
costs a few tensor operations per block rather than per round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from byzmtl.names import NO_COOPERATION
from byzmtl.split_stats import (
    Piece,
    combined_max,
    combined_mean,
    combined_min,
    combined_values,
    extreme,
    on_host,
    piece,
)
from byzmtl.tables import Table

if TYPE_CHECKING:
    import pandas as pd

    from byzmtl.engine.ranks import Ranks

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


@dataclass(frozen=True, eq=False)
class Subsets:
    """The subsets the recording reduces over, "all" normal agents and each task group that
    has normal agents, as far as one holder of agents (one process, or a partitioned run's
    rank) holds them: its members of each subset (indices into its agents), their first
    position in the subset (members numbered in increasing agent id) and the subset's size."""

    names: list[str]
    members: list[Tensor]
    starts: list[int]
    totals: list[int]

    @classmethod
    def of(
        cls,
        normal: np.ndarray,
        groups: np.ndarray,
        group_names: Sequence[str],
        device: torch.device | str = "cpu",
        ranks: Ranks | None = None,
    ) -> Subsets:
        """The subsets of the agents whose ``normal`` flags and ``groups`` are given: the whole
        network's, or with ``ranks`` this rank's own agents' (ranks hold consecutive ranges;
        the ranks count their members together: collective)."""
        masks = [normal, *(normal & (groups == g) for g in range(len(group_names)))]
        counts = np.array([int(mask.sum()) for mask in masks], dtype=np.int64)
        every = np.stack([counts] if ranks is None else ranks.gathered(counts))
        rank = 0 if ranks is None else ranks.rank
        before, totals = every[:rank].sum(0), every.sum(0)
        names = ["all", *group_names]
        kept = [s for s in range(len(masks)) if s == 0 or totals[s]]
        return cls(
            [names[s] for s in kept],
            [torch.as_tensor(np.flatnonzero(masks[s]), device=device) for s in kept],
            [int(before[s]) for s in kept],
            [int(totals[s]) for s in kept],
        )

    @classmethod
    def normal(
        cls, normal: np.ndarray, device: torch.device | str = "cpu", ranks: Ranks | None = None
    ) -> Subsets:
        """Only the subset "all" of the normal agents (see :meth:`of`)."""
        return cls.of(normal, np.zeros(len(normal), np.int64), (), device, ranks)

    def pieces(self, values: Tensor, keep_values: bool = False) -> list[Piece]:
        """Each subset's :class:`~byzmtl.split_stats.Piece` of (..., n) values of the
        holder's agents."""
        return [
            piece(values.index_select(-1, members), start, total, keep_values)
            for members, start, total in zip(self.members, self.starts, self.totals, strict=True)
        ]


class Recorder:
    """Collects (R, N) per-agent metrics each recorded round; reduces them over the normal agents
    of every subset ("all" and each task group that has normal agents) to their mean, min, max
    and the ``percentiles`` asked for. From record ``final_start`` on (the final window), it
    also sums every agent's own values, for the worst agent's final-window mean (``worst``).

    The means are summed in a fixed order (:mod:`byzmtl.split_stats`). In a partitioned run
    (``ranks``: ``normal`` and ``groups`` are then the rank's own agents') each rank holds its
    own agents' values only: every round its :meth:`pieces` are gathered and every rank adds
    the same statistics (:meth:`add_gathered`), equal bit for bit to one process's."""

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
        ranks: Ranks | None = None,
    ) -> None:
        self.metric_names, self.rule_names = tuple(metric_names), list(rule_names)
        self.statistics = (*STATISTICS, *(percentile_name(p) for p in percentiles))
        self._quantiles = torch.tensor([p / 100 for p in percentiles], dtype=torch.float64)
        self._held = Subsets.of(normal, groups, group_names, device, ranks)
        self.subset_names = self._held.names
        self._ranks = ranks
        self._agent_cuts = _cuts(len(normal), ranks)
        self._buffer: list[dict[str, Tensor]] = []
        self._blocks: list[dict[str, np.ndarray]] = []
        self._count = 0
        self._final_start, self._higher = final_start, higher_is_better
        self._final_sums: dict[str, Tensor] = {}
        self._final_records = 0

    def add(self, metrics: dict[str, Tensor]) -> None:
        """Record one round: name -> (R, N) per-agent values (one process)."""
        if self._ranks is not None:
            raise ValueError("a partitioned run's recorder adds gathered pieces (add_gathered)")
        self._add_final(metrics)
        self._buffer.append(metrics)
        first = metrics[self.metric_names[0]]
        if len(self._buffer) * first.numel() >= _BUFFER_VALUES:
            self._flush()

    def _add_final(self, metrics: dict[str, Tensor]) -> None:
        if self._final_start is not None and self._count >= self._final_start:
            for name in self.metric_names:
                total = self._final_sums.get(name)
                self._final_sums[name] = metrics[name].double() + (0 if total is None else total)
            self._final_records += 1
        self._count += 1

    def pieces(self, metrics: dict[str, Tensor]) -> dict[str, list[Piece]]:
        """name -> each subset's piece of one round's (R, N_r) values of this holder's agents
        (what a partitioned run's ranks gather)."""
        keep = bool(len(self._quantiles))
        return {
            name: [on_host(p) for p in self._held.pieces(metrics[name], keep)]
            for name in self.metric_names
        }

    def add_gathered(self, metrics: dict[str, Tensor], gathered: Sequence[Any]) -> None:
        """Record one round of a partitioned run: this rank's (R, N_r) ``metrics`` and every
        rank's :meth:`pieces` of them, in rank order."""
        self._add_final(metrics)
        block = {}
        for name in self.metric_names:
            per_subset = [
                self._statistics([pieces[name][s] for pieces in gathered])
                for s in range(len(self.subset_names))
            ]
            block[name] = torch.stack(per_subset, 1)[None].double().cpu().numpy()
        self._blocks.append(block)

    def _flush(self) -> None:
        if not self._buffer:
            return
        block: dict[str, np.ndarray] = {}
        keep = bool(len(self._quantiles))
        for name in self.metric_names:
            values = torch.stack([m[name] for m in self._buffer])  # (K, R, N)
            stats = [self._statistics([p]) for p in self._held.pieces(values, keep)]
            block[name] = torch.stack(stats, 2).double().cpu().numpy()  # (K, R, S, statistics)
        self._blocks.append(block)
        self._buffer = []

    def _statistics(self, pieces: Sequence[Piece]) -> Tensor:
        """(..., statistics) of one subset from its pieces: mean, min, max, percentiles."""
        stats = [combined_mean(pieces), combined_min(pieces), combined_max(pieces)]
        if not len(self._quantiles):
            return torch.stack(stats, -1)
        values = combined_values(pieces)
        q = torch.quantile(values, self._quantiles.to(values.device, values.dtype), -1)
        return torch.cat([torch.stack(stats, -1), q.movedim(0, -1)], -1)

    @property
    def n_records(self) -> int:
        return self._count

    def state_dict(self) -> dict[str, Any]:
        """Everything recorded so far, exactly as held (buffered rounds unreduced, so that a
        recorder restored by :meth:`load_state_dict` reduces the same blocks as one that never
        stopped), as tensors, lists and numbers (for ``torch.save``, ``weights_only`` loading);
        a partitioned run's ranks join their agents' final-window sums (collective)."""
        final_sums = dict(self._final_sums)
        if self._ranks is not None:
            cuts = self._agent_cuts
            final_sums = {k: self._ranks.joined(v, 1, cuts) for k, v in final_sums.items()}
        return {
            "layout": _layout(self.metric_names, self.rule_names, self.subset_names),
            "statistics": list(self.statistics),
            "count": self._count,
            "buffer": list(self._buffer),
            "blocks": [
                {n: torch.from_numpy(b[n]) for n in self.metric_names} for b in self._blocks
            ],
            "final_sums": final_sums,
            "final_records": self._final_records,
        }

    def load_state_dict(self, record: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` of a recorder built the same way (ValueError if its
        metrics, rules, subsets or statistics differ); a partitioned run's rank keeps its own
        agents' part."""
        layout = _layout(self.metric_names, self.rule_names, self.subset_names)
        if record["layout"] != layout or record["statistics"] != list(self.statistics):
            raise ValueError("the recorded metrics belong to another run (metrics, rules, groups)")
        if self._ranks is not None and record["buffer"]:
            raise ValueError("the recorded metrics belong to a run of one process")
        self._count = int(record["count"])
        self._buffer = list(record["buffer"])
        self._blocks = [{n: b[n].numpy() for n in self.metric_names} for b in record["blocks"]]
        own = slice(0, None) if self._ranks is None else _own(self._agent_cuts, self._ranks)
        self._final_sums = {k: v[:, own].clone() for k, v in record["final_sums"].items()}
        self._final_records = int(record["final_records"])

    def worst(self) -> dict[str, np.ndarray] | None:
        """name -> (rules, subsets): the final-window mean of the worst normal agent of each
        subset (the largest, or the smallest for metrics where higher is better); None before
        the final window. Collective in a partitioned run."""
        if not self._final_records:
            return None
        out = {}
        for name, total in self._final_sums.items():
            mean = total / self._final_records  # (R, N)
            pick = torch.amin if name in self._higher else torch.amax
            held = [
                pick(mean.index_select(1, members), 1).cpu() if members.numel() else None
                for members in self._held.members
            ]
            every = [held] if self._ranks is None else self._ranks.gathered(held)
            out[name] = torch.stack(
                [
                    extreme([worst[s] for worst in every], pick)
                    for s in range(len(self.subset_names))
                ],
                1,
            )
        return {name: value.numpy() for name, value in out.items()}

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

    def of_rounds(self, block: Sequence[Sequence[Tensor | None]]) -> Tensor | None:
        """(K, R, 2, b - a): b_k and o_k of K rounds of weights, one (E,) tensor or None per
        rule (a rule without weights: NaN for every receiver with an edge in the sum, as if its
        weights were NaN, 0 for the others); None when no rule has weights. One round's sums
        are taken from each rule's tensor as it is; several rounds' from their stacked copy."""
        template = next((w for ws in block for w in ws if w is not None), None)
        if template is None:
            return None
        stacked = None if len(block) == 1 else stacked_weights(block)
        sums = []
        for edges, receivers in ((self._byzantine, self._byzantine_to), (self._own, self._own_to)):
            if stacked is not None:
                values = stacked.index_select(2, edges)
            else:  # one round: no copy of its (E,) weights, only of the edges summed
                values = template.new_empty((1, len(block[0]), edges.numel()))
                for r, weights in enumerate(block[0]):
                    if weights is None:
                        values[0, r].fill_(torch.nan)
                    else:
                        torch.index_select(weights, 0, edges, out=values[0, r])
            totals = values.new_zeros((*values.shape[:2], self.n_agents))
            sums.append(totals.index_add_(2, receivers, values))
        return torch.stack(sums, 2)

    def of_round(self, weights: Sequence[Tensor | None]) -> Tensor | None:
        """(R, 2, b - a) sums of one round's weights (one (E,) tensor or None per rule); None
        when no rule has weights."""
        return None if (sums := self.of_rounds([weights])) is None else sums[0]


def stacked_weights(block: Sequence[Sequence[Tensor | None]]) -> Tensor | None:
    """(K, R, E) weights of K rounds, NaN for a rule without; None when no rule has any."""
    template = next((w for ws in block for w in ws if w is not None), None)
    if template is None:
        return None
    missing: Tensor | None = None  # made only where a rule has none
    flat: list[Tensor] = []
    for weights in (w for ws in block for w in ws):
        if weights is None:
            if missing is None:
                missing = template.new_full(template.shape, torch.nan)
            weights = missing
        flat.append(weights)
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
        ranks: Ranks | None = None,
    ) -> None:
        self.rule_names = list(rule_names)
        self.time_unit = time_unit
        self.round_column = "iteration" if time_unit == "iteration" else "round"
        self._record_times = None if record_times is None else np.asarray(record_times, float)
        names = self.rule_names
        self.reference = names.index(NO_COOPERATION) if NO_COOPERATION in names else None
        self.loss_metric = loss_metric if self.reference is not None else None
        self._graph = (receivers, senders, normal, groups, device)  # for the sums, if needed
        self._sums: WeightSums | None = None  # built on first use: the whole graph's index
        # lists would cost 16 B per edge
        held = Subsets.normal(normal, device, ranks)
        self._normal, self._normal_start = held.members[0], held.starts[0]
        self._normal_total = held.totals[0]
        self._ranks = ranks
        self._normal_cuts = _cuts(len(self._normal), ranks)
        self._n_agents = len(normal)
        self._n_edges = 0 if receivers is None else len(receivers)
        self._weights: list[Sequence[Tensor | None]] = []
        self._pending: Tensor | None = None  # a partitioned run: the regret of its last pieces
        self._recorded: list[int] = []  # rounds at which the task reported metrics
        self._losses: list[tuple[int, Tensor]] = []
        self._rounds: list[np.ndarray] = []  # blocks of (K, R, 4)
        self._records: list[tuple[np.ndarray, np.ndarray]] = []  # (rounds, (K, R, 2)) blocks
        self._regret: Tensor | None = None  # (R, normal agents) cumulative excess loss

    def add(self, round_index: int, weights: Sequence[Tensor | None], metrics: Any) -> None:
        """Record round ``round_index`` (0-based): one (E,) weight tensor (or None) per rule,
        and the round's metrics (name -> (R, N)) or None. Needs the graph's edges (given
        None, the diagnostics take a partitioned run's pieces: :meth:`add_gathered`)."""
        if self._graph[0] is None:
            raise ValueError("these diagnostics were given no edges: add gathered pieces")
        self._weights.append(weights)
        self._add_metrics(round_index, metrics)
        if len(self._weights) * len(weights) * self._n_edges >= _BUFFER_VALUES:
            self._flush()

    def pieces(self, sums: Tensor | None, metrics: Any) -> tuple[Any, Any]:
        """A partitioned run's rank's pieces of one round (what the ranks gather): of its normal
        agents' :class:`WeightSums` ((R, 2, N_r), None when no rule has weights) and, at a
        record, of their regret."""
        weights = None
        if sums is not None:
            weights = on_host(self._normal_piece(sums.index_select(2, self._normal)))
        self._pending = None
        loss = self._excess(metrics)
        if loss is None:
            return weights, None
        self._pending = _accumulated(self._regret, loss[None])[-1]
        return weights, self._normal_piece(self._pending)  # on the host already (_excess)

    def add_gathered(self, round_index: int, metrics: Any, gathered: Sequence[Any]) -> None:
        """Record round ``round_index`` of a partitioned run from every rank's :meth:`pieces`,
        in rank order (and this rank's metrics): the same records as one process's."""
        if metrics is not None:
            self._recorded.append(round_index)
        weights = [pieces[0] for pieces in gathered]
        self._rounds.append(self._weight_statistics(None if weights[0] is None else weights, 1))
        if gathered[0][1] is not None:
            regret = [pieces[1] for pieces in gathered]
            stats = torch.stack([combined_mean(regret), combined_max(regret)], -1)[None]
            self._records.append((np.array([round_index]), stats.double().numpy()))
            self._regret = self._pending

    def _normal_piece(self, values: Tensor) -> Piece:
        """The piece of (..., normal agents held) ``values``."""
        return piece(values, self._normal_start, self._normal_total)

    def _excess(self, metrics: Any) -> Tensor | None:
        """(..., R, normal agents) L^rule - L^none of the recorded loss, on the host (CUDA has
        no deterministic cumsum: see byzmtl.determinism); None without it."""
        if not self._has_loss(metrics):
            return None
        assert self.reference is not None  # a loss metric is kept only with a reference
        loss = metrics[self.loss_metric].index_select(-1, self._normal).cpu()
        return loss - loss[..., self.reference : self.reference + 1, :]

    def _has_loss(self, metrics: Any) -> bool:
        return metrics is not None and self.loss_metric is not None and self.loss_metric in metrics

    def _add_metrics(self, round_index: int, metrics: Any) -> None:
        if metrics is not None:
            self._recorded.append(round_index)
        if self._has_loss(metrics):
            self._losses.append((round_index, metrics[self.loss_metric]))

    def _flush(self) -> None:
        if self._weights:
            if self._sums is None:
                receivers, senders, normal, groups, device = self._graph
                assert receivers is not None and senders is not None  # add() checks
                every = slice(0, self._n_agents)
                self._sums = WeightSums(receivers, senders, normal, groups, every, device)
            sums = self._sums.of_rounds(self._weights)
            sums = None if sums is None else sums.index_select(3, self._normal)
            pieces = None if sums is None else [self._normal_piece(sums)]
            self._rounds.append(self._weight_statistics(pieces, len(self._weights)))
            self._weights = []
        if self._losses:
            rounds = np.array([r for r, _ in self._losses])
            excess = self._excess({self.loss_metric: torch.stack([m for _, m in self._losses])})
            assert excess is not None
            excess = _accumulated(self._regret, excess)
            self._regret = excess[-1]
            regret = [self._normal_piece(excess)]
            stats = torch.stack([combined_mean(regret), combined_max(regret)], -1)
            self._records.append((rounds, stats.double().numpy()))
            self._losses = []

    def _weight_statistics(self, pieces: Sequence[Piece] | None, rounds: int) -> np.ndarray:
        """(K, R, 4) byzantine mean, max, own-task mean, min over normal agents, from the pieces
        of K rounds of (K, R, 2, normal agents) :class:`WeightSums` (None: no rule has
        weights)."""
        if pieces is None:
            return np.full((rounds, len(self.rule_names), 4), np.nan)
        mean, low, high = combined_mean(pieces), combined_min(pieces), combined_max(pieces)
        stats = [mean[..., 0], high[..., 0], mean[..., 1], low[..., 1]]
        return torch.stack(stats, -1).reshape(rounds, -1, 4).double().cpu().numpy()

    def state_dict(self) -> dict[str, Any]:
        """Everything recorded so far, exactly as held (buffered rounds unreduced, the regret
        carried so far), as tensors, lists and numbers; see :meth:`load_state_dict`. A
        partitioned run's ranks join their agents' regret (collective)."""
        regret = self._regret
        if self._ranks is not None and regret is not None:
            regret = self._ranks.joined(regret, 1, self._normal_cuts)
        return {
            "layout": _layout((), self.rule_names, ()),
            "edges": self._n_edges,
            "weights": [list(weights) for weights in self._weights],
            "recorded": list(self._recorded),
            "losses": [[r, loss] for r, loss in self._losses],
            "rounds": [torch.from_numpy(block) for block in self._rounds],
            "records": [[torch.from_numpy(r), torch.from_numpy(v)] for r, v in self._records],
            "regret": regret,
        }

    def load_state_dict(self, record: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` of diagnostics built the same way (ValueError if
        the rules or the number of edges differ); a partitioned run's rank keeps its own normal
        agents' regret."""
        if record["layout"] != _layout((), self.rule_names, ()) or record["edges"] != self._n_edges:
            raise ValueError("the recorded diagnostics belong to another run (rules, edges)")
        if self._ranks is not None and (record["weights"] or record["losses"]):
            raise ValueError("the recorded diagnostics belong to a run of one process")
        self._weights = [list(weights) for weights in record["weights"]]
        self._recorded = [int(r) for r in record["recorded"]]
        self._losses = [(int(r), loss) for r, loss in record["losses"]]
        self._rounds = [block.numpy() for block in record["rounds"]]
        self._records = [(r.numpy(), v.numpy()) for r, v in record["records"]]
        regret = record["regret"]
        if self._ranks is not None and regret is not None:
            regret = regret[:, _own(self._normal_cuts, self._ranks)].clone()
        self._regret = regret

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


def _cuts(held: int, ranks: Ranks | None) -> list[int]:
    """[0, n_0, n_0 + n_1, ...]: where each rank's ``held`` things start in the whole."""
    counts = [held] if ranks is None else ranks.gathered(held)
    return np.concatenate([[0], np.cumsum(counts)]).astype(int).tolist()


def _own(cuts: list[int], ranks: Ranks) -> slice:
    return slice(cuts[ranks.rank], cuts[ranks.rank + 1])


def _accumulated(carry: Tensor | None, rows: Tensor) -> Tensor:
    """(K, ...) running sums of ``rows`` after ``carry``: carry + r_0, (carry + r_0) + r_1, ...,
    added one row at a time (torch's cumsum, the carry its first row), so that the sums do not
    depend on the blocks of rows they are given in."""
    if carry is None:
        return rows.cumsum(0)
    return torch.cat([carry[None].to(rows.device, rows.dtype), rows]).cumsum(0)[1:]
