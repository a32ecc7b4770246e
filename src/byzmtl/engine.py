"""The diffusion engine: one adapt-then-combine round, vectorised over agents, edges and rules.

Every round, for every agent k of every replica (one replica per rule, all fed the same data):

    psi_k   = local step of w_k on k's current batch              (adapt: task.adapt)
    m_lk    = psi_l, or the attack's message when l is Byzantine   (send)
    s_lk    = l_k(m_lk), the loss of the message on k's batch      (score, if a rule asks)
    w_k     = rule(m_.k, s_.k, state)                              (weigh and combine)
    metrics = task.metrics(w)                                      (record)

Models of all agents live in one tensor of shape (replicas, agents, parameters). There is no
Python loop over agents or edges. Messages are never copied edge by edge unless a rule or the
scoring reads them one by one: since m_lk = psi_l except on the Byzantine senders' edges, a rule
that weighs edges combines straight from psi and the attack's messages (dense or sparse
products), and
on dense graphs the loss of every model on every agent's batch (the task's ``sender_losses``) and
the squared distances between models are computed for all pairs at once. Byzantine agents' own
models follow their local step only (or stay at their initial value when the attack does not
train), unless the attack sets them (``Attack.own_models``); only what they send matters.

Containment: a normal agent's model is finite after every round, whatever it receives. A local
step that yields a NaN or Inf coordinate is rejected (the agent keeps w_k(i-1)), and so is a
combination (the agent keeps psi_k); each rejection is counted per rule in ``SimState.contained``
and never reaches another agent, since only finite models are ever sent.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from byzmtl import rng
from byzmtl.attacks.base import Attack, AttackContext, AttackInputs
from byzmtl.graph import Graph
from byzmtl.ops import all_squared_distances, segment_sums, squared_norm
from byzmtl.rules.base import (
    Combination,
    Neighbourhoods,
    Rule,
    RuleInputs,
    RuleState,
    WeightRule,
)


class Task(Protocol):
    """What the engine needs from a case study (see :mod:`byzmtl.tasks`)."""

    n_agents: int
    n_rounds: int
    metric_names: tuple[str, ...]

    def init_models(self, replicas: int) -> Tensor:
        """(R, N, d) initial models."""

    def init_state(self, models: Tensor) -> dict[str, Tensor]:
        """Per-agent learner state (optimiser moments...), empty for plain steps."""

    def batch(self, iteration: int) -> Any:
        """Every agent's data for this round."""

    def adapt(
        self, models: Tensor, batch: Any, state: dict[str, Tensor], iteration: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """(R, N, d) -> psi after one local step, and the new learner state."""

    def edge_losses(self, messages: Tensor, receivers: Tensor, batch: Any) -> Tensor:
        """(R, E, d) messages -> (R, E) loss of each message on its receiver's batch, as a new
        tensor (the engine modifies it in place)."""

    def metrics(self, models: Tensor, batch: Any, iteration: int) -> dict[str, Tensor] | None:
        """Per-agent metrics (name -> (R, N)) to record after this round, or None."""

    # Optional hook, used on dense graphs (|E| >= N^2 / 2, self-loops included) when a task has it:
    #     def sender_losses(self, models: Tensor, batch) -> Tensor | None
    # the (R, N, N) losses l_k(w_l) of every agent l's model (models (R, N, d)) on every agent
    # k's batch, at [r, k, l]; None when the task has no faster way than edge by edge.


@dataclass
class SimState:
    """Everything a run needs to continue, bit for bit (see ``save`` and ``load``)."""

    iteration: int
    models: Tensor  # (R, N, d)
    rule_states: list[RuleState]
    task_state: dict[str, Tensor] = field(default_factory=dict)
    # (R, 2) long: normal agents' rejected local steps and rejected combinations so far
    contained: Tensor | None = None

    def save(self, path: str | Path) -> None:
        """Checkpoint the state (written to a temporary file, then renamed)."""
        path = Path(path)
        temporary = path.with_name(f".{path.name}.tmp")
        torch.save(self.__dict__, temporary)
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> SimState:
        """A state saved by :meth:`save`; continuing from it reproduces the uninterrupted run."""
        return cls(**torch.load(path, map_location=device, weights_only=True))


@dataclass(frozen=True, eq=False)
class RoundOutput:
    """What one round produced besides the new state (for recording)."""

    metrics: dict[str, Tensor] | None  # name -> (R, N)
    weights: list[Tensor | None]  # per rule, (E,) edge weights where defined


SHARD_EDGES = 1 << 18  # edges x replicas per shard: a shard's temporaries stay in cache


@dataclass(frozen=True, eq=False)
class Shard:
    """A contiguous range of receivers with all their incoming edges (edges are sorted by
    receiver), combined as a unit. ``edges`` numbers receivers locally (0 = the first agent of
    the shard); senders keep their global ids."""

    agents: slice  # the receivers a..b-1
    edge_range: slice  # their edges
    edges: Neighbourhoods
    receivers: Tensor  # (E_s,) global receiver of each edge (for the task's batches)
    attacked: Tensor  # positions, within the shard, of edges whose sender is Byzantine
    attacked_rows: Tensor  # their rows in the round's tensor of attack messages
    totals: tuple[int, int]  # (edges, agents) of the whole graph

    @property
    def n_edges(self) -> int:
        return self.edges.n_edges

    @cached_property
    def dense(self) -> bool:
        """At least half of all (receiver, sender) pairs of the shard are edges: then a dense
        (receivers, agents) matrix, or work on all pairs, costs at most twice the edges."""
        return self.edges.n_agents * self.totals[1] <= 2 * self.n_edges

    @cached_property
    def pairs(self) -> Tensor:
        """(E_s,) position receiver * N + sender of each edge in an (N, N) matrix of pairs."""
        return self.receivers * self.totals[1] + self.edges.senders

    def slice_of(self, state: Tensor) -> slice:
        """The part of a rule's state tensor that belongs to this shard: per-edge tensors are
        cut by edges, per-agent tensors by agents."""
        return self.edge_range if state.shape[0] == self.totals[0] else self.agents


class AttackOutputError(TypeError):
    """An attack returned something other than a real tensor of the expected shape."""


def _checked(value: object, shape: tuple[int, ...], what: str, axes: str) -> Tensor:
    """``value`` if it is a real floating-point (or integer) tensor of ``shape`` (named
    ``axes`` in the error message)."""
    if (
        not isinstance(value, Tensor)
        or tuple(value.shape) != shape
        or value.is_complex()
        or value.dtype == torch.bool
    ):
        got = f"{type(value).__name__}"
        if isinstance(value, Tensor):
            got = f"a {value.dtype} tensor of shape {tuple(value.shape)}"
        raise AttackOutputError(
            f"attack {what} must return a real tensor of shape {axes} = {shape}, got {got}"
        )
    return value


def keep_finite(values: Tensor, fallback: Tensor) -> tuple[Tensor, Tensor | None]:
    """``values`` (R, N, d) with every agent's row that holds a NaN or Inf replaced by its row
    of ``fallback``, and the (R, N) mask of replaced rows (None when none was). One reduction
    over ``values`` in the common case where every row is finite."""
    if bool(torch.isfinite(values.sum(-1)).all()):
        return values, None
    bad = ~torch.isfinite(values).all(-1)  # the sum may also overflow on finite rows
    if not bool(bad.any()):
        return values, None
    return torch.where(bad[..., None], fallback, values), bad


def make_shards(edges: Neighbourhoods, attack_edges: Tensor, max_edges: int) -> list[Shard]:
    """Cut the receivers into contiguous ranges of at most ``max_edges`` edges each (a receiver
    with more edges than that gets a shard of its own)."""
    totals = (edges.n_edges, edges.n_agents)
    rows = torch.arange(attack_edges.numel(), device=attack_edges.device)
    offsets = np.concatenate([[0], np.cumsum(edges.degrees.cpu().numpy())])
    if offsets[-1] <= max_edges:
        return [
            Shard(
                slice(0, edges.n_agents),
                slice(0, edges.n_edges),
                edges,
                edges.receivers,
                attack_edges,
                rows,
                totals,
            )
        ]
    shards, first = [], 0
    while first < edges.n_agents:
        last = int(np.searchsorted(offsets, offsets[first] + max_edges, side="right")) - 1
        last = min(max(last, first + 1), edges.n_agents)
        lo, hi = int(offsets[first]), int(offsets[last])
        inside = (attack_edges >= lo) & (attack_edges < hi)
        local = Neighbourhoods(
            receivers=edges.receivers[lo:hi] - first,
            senders=edges.senders[lo:hi],
            self_edges=edges.self_edges[first:last] - lo,
            degrees=edges.degrees[first:last],
            n_agents=last - first,
        )
        shards.append(
            Shard(
                slice(first, last),
                slice(lo, hi),
                local,
                edges.receivers[lo:hi],
                attack_edges[inside] - lo,
                rows[inside],
                totals,
            )
        )
        first = last
    return shards


@dataclass(frozen=True, eq=False)
class _Round:
    """What the combine stage of one round works from."""

    iteration: int
    previous: Tensor  # (R, N, d) w(i-1)
    psi: Tensor  # (R, N, d) after the local step (Byzantine agents' as they are)
    sent: tuple[Tensor, Tensor | None] | None  # attack messages (R, B, d) and finite mask
    batch: Any
    pair_losses: Tensor | None  # (R_scored, N, N) losses of every model on every batch


@dataclass(frozen=True, eq=False)
class _CombineLayout:
    """Index tensors of one shard's combine for W weight rules (see
    ``Simulation._weighted_sums``), built once per shard."""

    dense: Tensor | None  # (W * E_s,) entries of (W, N_s, N) matrices, or None: sparse
    sparse: tuple[Tensor, Tensor] | None  # CSR offsets, columns into (W * N, d) psi rows
    attacked: tuple[Tensor, Tensor]  # CSR offsets, columns into (W * B_s, d) attack messages

    @classmethod
    def of(cls, shard: Shard, rules: int) -> _CombineLayout:
        edges, n_agents = shard.edges, shard.totals[1]
        device = edges.senders.device
        copies = torch.arange(rules, device=device)[:, None]
        dense = sparse = None
        if shard.dense:
            size = edges.n_agents * n_agents
            dense = (edges.receivers * n_agents + edges.senders + copies * size).reshape(-1)
        else:
            sparse = _csr(edges.degrees.repeat(rules), edges.senders + copies * n_agents)
        receivers = edges.receivers.index_select(0, shard.attacked)
        counts = torch.bincount(receivers, minlength=edges.n_agents).repeat(rules)
        slots = torch.arange(shard.attacked.numel(), device=device)
        attacked = _csr(counts, slots + copies * shard.attacked.numel())
        return cls(dense, sparse, attacked)


def _csr(counts: Tensor, columns: Tensor) -> tuple[Tensor, Tensor]:
    """CSR row offsets from per-row counts, and the flattened columns."""
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)]), columns.reshape(-1)


class ShardMessages:
    """The messages received on one shard's edges in one round, for every replica, built only
    when a rule needs them: m_lk = psi_l, except on attacked edges, where it is the attack's.

    On a dense shard (see ``Shard.dense``) of a model in single precision, the squared distances
    to per-receiver targets come from all pairs at once
    (:func:`byzmtl.ops.all_squared_distances`) without building the messages."""

    def __init__(
        self, psi: Tensor, shard: Shard, attack_values: Tensor | None, buffer: Tensor
    ) -> None:
        self.psi, self.shard, self.attack_values, self.buffer = psi, shard, attack_values, buffer
        self._gathered: Tensor | None = None

    def tensor(self) -> Tensor:
        """(R, E_s, d), gathered on first use into the engine's buffer (valid this round)."""
        if self._gathered is None:
            senders = self.shard.edges.senders
            gathered = torch.index_select(self.psi, 1, senders, out=self.buffer)
            if self.attack_values is not None:
                gathered.index_copy_(1, self.shard.attacked, self.attack_values)
            self._gathered = gathered
        return self._gathered

    def replica(self, r: int) -> _ReplicaMessages:
        return _ReplicaMessages(self, r)

    def squared_distances(self, r: int, targets: Tensor) -> Tensor:
        """(E_s,) ||m_lk - targets_k||^2 in replica r, ``targets`` (N_s, d)."""
        edges = self.shard.edges
        if self._gathered is not None or not self.shard.dense or targets.dtype == torch.float64:
            return squared_norm(self.tensor()[r] - targets.index_select(0, edges.receivers))
        pairs = all_squared_distances(targets, self.psi[r])
        first = self.shard.agents.start * self.shard.totals[1]
        out = pairs.flatten().index_select(0, self.shard.pairs - first)
        if self.attack_values is not None:
            attacked = self.shard.attacked
            own = targets.index_select(0, edges.receivers.index_select(0, attacked))
            out.index_copy_(0, attacked, squared_norm(self.attack_values[r] - own))
        return out


@dataclass(frozen=True, eq=False)
class _ReplicaMessages:
    """One replica's row of a :class:`ShardMessages` (what ``RuleInputs.received`` holds)."""

    messages: ShardMessages
    r: int

    def tensor(self) -> Tensor:
        return self.messages.tensor()[self.r]

    def squared_distances(self, targets: Tensor) -> Tensor:
        return self.messages.squared_distances(self.r, targets)


def _agent_ids(ids: Sequence[int] | np.ndarray, n_agents: int) -> np.ndarray:
    """``ids`` as an int64 array, or a one-line ValueError unless every id is an integer in
    [0, n_agents) (numpy would let a negative id index the last agents)."""
    array = np.asarray(ids)
    if not array.size:
        return array.astype(np.int64)
    if array.dtype.kind not in "iu" or array.min() < 0 or array.max() >= n_agents:
        raise ValueError(
            f"byzantine: agent ids must be integers in [0, {n_agents}), got {array.tolist()}"
        )
    return array.astype(np.int64)


class Simulation:
    """A network of agents learning one task each, run under several rules at once.

    ``rules`` are independent replicas of the same network: they see the same data, the same
    attack randomness and the same Byzantine agents, and differ only in how they combine.
    Large networks are combined shard by shard (contiguous ranges of receivers of at most
    ``shard_edges`` edges x replicas), which keeps temporaries in cache and changes no result.
    """

    def __init__(
        self,
        task: Task,
        graph: Graph,
        rules: Sequence[Rule],
        attack: Attack | None,
        byzantine: Sequence[int] | np.ndarray,
        seed: int,
        keys: np.ndarray | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
        shard_edges: int = SHARD_EDGES,
    ) -> None:
        if graph.n_agents != task.n_agents:
            raise ValueError(f"graph has {graph.n_agents} agents, task has {task.n_agents}")
        self.task, self.graph, self.rules, self.attack = task, graph, list(rules), attack
        if not self.rules:
            raise ValueError("a simulation needs at least one rule")
        self.seed, self.dtype, self.device = seed, dtype, torch.device(device)
        self.keys = rng.agent_keys(graph.n_agents) if keys is None else np.asarray(keys, np.uint64)
        self.edges = Neighbourhoods.from_graph(graph, self.device)
        for rule in self.rules:
            rule.check(self.edges)
        byz = np.zeros(graph.n_agents, dtype=bool)
        byz[_agent_ids(byzantine, graph.n_agents)] = True
        self.byzantine = torch.as_tensor(byz, device=self.device)
        self.byzantine_ids = torch.as_tensor(np.flatnonzero(byz), device=self.device)
        self.attack_edges = torch.as_tensor(np.flatnonzero(byz[graph.senders]), device=self.device)
        if self.attack_edges.numel() and attack is None:
            raise ValueError("Byzantine agents need an attack")
        self.attack_context = AttackContext(
            seed,
            self.keys,
            self.edges,
            self.byzantine,
            self.attack_edges,
            getattr(task, "parameter_sizes", None),
        )
        if attack is not None and self.byzantine_ids.numel():
            attack.check(self.attack_context, task)
        self.scored = [i for i, rule in enumerate(self.rules) if rule.needs_losses]
        contiguous = (
            self.scored == list(range(self.scored[0], self.scored[-1] + 1))
            if self.scored
            else False
        )
        self._scored_rows: slice | Tensor = (
            slice(self.scored[0], self.scored[-1] + 1)
            if contiguous
            else torch.as_tensor(self.scored, dtype=torch.long, device=self.device)
        )
        self._score_row = {r: row for row, r in enumerate(self.scored)}
        self.shards = make_shards(self.edges, self.attack_edges, max(1, shard_edges // len(rules)))
        self.largest_shard = max(shard.n_edges for shard in self.shards)
        self._message_views: dict[int, Tensor] = {}
        self._layouts: dict[int, _CombineLayout] = {}
        self.dense = graph.n_agents**2 <= 2 * graph.n_edges
        self._sender_losses = getattr(task, "sender_losses", None)
        self._all_finite = torch.ones(
            (self.replicas, graph.n_edges), dtype=torch.bool, device=self.device
        )
        self._finite_rows = {  # per shard size: one all-true (E_s,) mask per replica
            shard.n_edges: self._all_finite[:, : shard.n_edges].unbind(0) for shard in self.shards
        }
        self._by_weight = [isinstance(rule, WeightRule) for rule in self.rules]
        empty = torch.empty(0, device=self.device)
        self._inputs = {
            (id(shard), r): RuleInputs(shard.edges, empty, empty, True, empty, empty, None, 0)
            for shard in self.shards
            for r in range(self.replicas)
        }
        self._weight_rows = [r for r, weighted in enumerate(self._by_weight) if weighted]
        self._weight_index = torch.as_tensor(self._weight_rows, device=self.device)

    @property
    def replicas(self) -> int:
        return len(self.rules)

    def init_state(self) -> SimState:
        models = self.task.init_models(self.replicas).to(self.device, self.dtype)
        rule_states = [rule.init_state(self.edges, self.dtype) for rule in self.rules]
        return SimState(0, models, rule_states, self.task.init_state(models))

    def step(self, state: SimState) -> tuple[SimState, RoundOutput]:
        """One adapt-then-combine round."""
        with torch.inference_mode():
            return self._step(state)

    def _step(self, state: SimState) -> tuple[SimState, RoundOutput]:
        i, previous = state.iteration, state.models
        batch = self.task.batch(i)
        attacking = self.attack is not None and self.byzantine_ids.numel() > 0
        training = batch
        if attacking:
            training = self.attack.training_batch(self.task, batch, self.byzantine)  # type: ignore[union-attr]
        psi, task_state = self.task.adapt(previous, training, state.task_state, i)
        if attacking and not self.attack.trains:  # type: ignore[union-attr]
            # Byzantine agents that do not train keep their model: psi_b = w_b
            frozen = previous.index_select(1, self.byzantine_ids)
            psi = psi.index_copy(1, self.byzantine_ids, frozen)
        psi, failed_steps = keep_finite(psi, previous)
        sent, own, heard = None, None, psi
        if self.attack_edges.numel():
            sent, own, heard = self._attack(i, previous, psi, batch)
        pair_losses = None
        if self.scored and self.dense and self._sender_losses is not None:
            pair_losses = self._sender_losses(heard[self._scored_rows], batch)
        round_ = _Round(i, previous, heard, sent, batch, pair_losses)
        if len(self.shards) == 1:
            new, weights, rule_states = self._shard_step(self.shards[0], round_, state.rule_states)
        else:
            new, weights, rule_states = self._sharded_step(round_, state.rule_states)
        new, failed_combinations = keep_finite(new, psi)
        if self.byzantine_ids.numel():  # Byzantine agents do not combine: w_b = psi_b
            kept = psi.index_select(1, self.byzantine_ids)
            if own is not None:
                kept = torch.where(torch.isfinite(own).all(-1, keepdim=True), own, kept)
            new.index_copy_(1, self.byzantine_ids, kept)
        contained = self._count_contained(state.contained, failed_steps, failed_combinations)
        metrics = self.task.metrics(new, batch, i)
        next_state = SimState(i + 1, new, rule_states, task_state, contained)
        return next_state, RoundOutput(metrics, weights)

    def _count_contained(
        self, counts: Tensor | None, steps: Tensor | None, combinations: Tensor | None
    ) -> Tensor | None:
        """(R, 2) counts so far plus this round's rejected steps and combinations of normal
        agents (masks (R, N), None where nothing was rejected)."""
        if steps is None and combinations is None:
            return counts
        if counts is None:
            counts = torch.zeros((self.replicas, 2), dtype=torch.long, device=self.device)
        added = [
            torch.zeros(self.replicas, dtype=torch.long, device=self.device)
            if mask is None
            else (mask & ~self.byzantine).sum(1)
            for mask in (steps, combinations)
        ]
        return counts + torch.stack(added, 1)

    def _sharded_step(
        self, round_: _Round, states: list[RuleState]
    ) -> tuple[Tensor, list[Tensor | None], list[RuleState]]:
        """The combine stage shard by shard, each shard's temporaries small enough to stay in
        cache; outputs are written into round-wide tensors."""
        new = torch.empty_like(round_.previous)
        weights: list[Tensor | None] = [None] * self.replicas
        new_states: list[RuleState] = [{} for _ in self.rules]
        for shard in self.shards:
            local = [
                {key: value[shard.slice_of(value)] for key, value in rule_state.items()}
                for rule_state in states
            ]
            models, shard_weights, shard_states = self._shard_step(shard, round_, local)
            new[:, shard.agents] = models
            for r in range(self.replicas):
                if shard_weights[r] is not None:
                    if weights[r] is None:
                        weights[r] = models.new_empty(self.edges.n_edges)
                    weights[r][shard.edge_range] = shard_weights[r]  # type: ignore[index]
                for key, value in shard_states[r].items():
                    if key not in new_states[r]:
                        whole = states[r][key]
                        new_states[r][key] = value.new_empty(whole.shape)
                    new_states[r][key][shard.slice_of(new_states[r][key])] = value
        return new, weights, new_states

    def _shard_step(
        self, shard: Shard, round_: _Round, states: list[RuleState]
    ) -> tuple[Tensor, list[Tensor | None], list[RuleState]]:
        """Score, weigh and combine for the receivers of one shard."""
        attack_values: Tensor | None = None
        finite: Tensor | None = None
        if round_.sent is not None and shard.attacked.numel():
            attack_values, sent_finite = round_.sent
            if len(self.shards) > 1:
                attack_values = attack_values.index_select(1, shard.attacked_rows)
                if sent_finite is not None:
                    sent_finite = sent_finite.index_select(1, shard.attacked_rows)
            if sent_finite is not None:
                finite = self._all_finite[:, : shard.n_edges].clone()
                finite[:, shard.attacked] = sent_finite
        buffer = self._message_buffer(round_.psi, shard)
        received = ShardMessages(round_.psi, shard, attack_values, buffer)
        losses = self._losses(shard, round_, received, attack_values)
        if losses is not None and finite is not None:
            losses = losses.masked_fill(~finite[self._scored_rows], torch.inf)
        outputs, rule_states = [], []
        oks = self._finite_rows[shard.n_edges] if finite is None else finite.unbind(0)
        previous, psi = round_.previous, round_.psi
        if len(self.shards) > 1:
            previous, psi = previous[:, shard.agents], psi[:, shard.agents]
        rows = zip(oks, previous.unbind(0), psi.unbind(0), strict=True)
        for r, (rule, (ok, before, own)) in enumerate(zip(self.rules, rows, strict=True)):
            row = self._score_row.get(r)
            inputs = self._inputs[id(shard), r]  # reused: rules must not keep them past a round
            inputs.received, inputs.finite = received.replica(r), ok
            inputs.all_finite = finite is None
            inputs.previous, inputs.psi, inputs.iteration = before, own, round_.iteration
            inputs.losses = None if losses is None or row is None else losses[row]
            if self._by_weight[r]:
                output, rule_state = rule.affinities(inputs, states[r])
            else:
                output, rule_state = rule.step(inputs, states[r])
            outputs.append(output)
            rule_states.append(rule_state)
        models, weights = self._combine(shard, outputs, round_.psi, attack_values)
        return models, weights, rule_states

    def _losses(
        self, shard: Shard, round_: _Round, received: ShardMessages, attack_values: Tensor | None
    ) -> Tensor | None:
        """(R_scored, E_s) loss of every message on its receiver's batch, +inf where not finite:
        from the round's all-pairs losses where the task gave them (the attacked edges scored
        one by one), else edge by edge on the gathered messages."""
        if not self.scored:
            return None
        if round_.pair_losses is None:
            messages = received.tensor()[self._scored_rows]
            raw = self.task.edge_losses(messages, shard.receivers, round_.batch)
        else:
            raw = round_.pair_losses.flatten(1).index_select(1, shard.pairs)
            if attack_values is not None:
                attacked = self.task.edge_losses(
                    attack_values[self._scored_rows],
                    shard.receivers.index_select(0, shard.attacked),
                    round_.batch,
                )
                raw.index_copy_(1, shard.attacked, attacked)
        return raw.nan_to_num_(nan=torch.inf, posinf=torch.inf)

    def _message_buffer(self, psi: Tensor, shard: Shard) -> Tensor:
        """The (R, E_s, d) buffer the shard's messages are gathered into when a rule needs them,
        shared by all shards and reused every round (large fresh tensors cost page faults)."""
        out = self._message_views.get(id(shard))
        if out is None or out.shape[2] != psi.shape[2] or out.dtype != psi.dtype:
            size = psi.shape[0] * self.largest_shard * psi.shape[2]
            buffer = psi.new_empty(size)
            self._message_views = {
                id(s): buffer[: psi.shape[0] * s.n_edges * psi.shape[2]].view(
                    psi.shape[0], s.n_edges, psi.shape[2]
                )
                for s in self.shards
            }
            out = self._message_views[id(shard)]
        return out

    def _combine(
        self,
        shard: Shard,
        outputs: list[Tensor | Combination],
        psi: Tensor,
        attack_values: Tensor | None,
    ) -> tuple[Tensor, list[Tensor | None]]:
        """New models of every replica, and every rule's edge weights (where defined). The
        affinities of all weight rules are normalised and combined at once (see
        :meth:`_weighted_sums`)."""
        by_weight = self._weight_rows
        weights: list[Tensor | None] = [
            None if r in by_weight else outputs[r].weights  # type: ignore[union-attr]
            for r in range(self.replicas)
        ]
        models = [None if r in by_weight else outputs[r].models for r in range(self.replicas)]
        if by_weight:
            stacked = shard.edges.normalise(torch.stack([outputs[r] for r in by_weight]))
            if len(by_weight) < self.replicas:
                psi = psi.index_select(0, self._weight_index)
                if attack_values is not None:
                    attack_values = attack_values.index_select(0, self._weight_index)
            combined = self._weighted_sums(shard, stacked, psi, attack_values)
            if len(by_weight) == self.replicas:
                return combined, list(stacked.unbind(0))
            for row, r in enumerate(by_weight):
                models[r], weights[r] = combined[row], stacked[row]
        return torch.stack(models), weights  # type: ignore[arg-type]

    def _weighted_sums(
        self, shard: Shard, weights: Tensor, psi: Tensor, attack_values: Tensor | None
    ) -> Tensor:
        """(W, N_s, d): w_k = sum over edges (k, l) of c_lk m_lk for W weight rules, weights
        (W, E_s), straight from psi (W, N, d) and the attack's messages on the shard's attacked
        edges (W, B_s, d), never from a per-edge copy of the messages:

            w_k = sum over honest l of c_lk psi_l  +  sum over attacked edges (k, b) of c_bk m_bk.

        The first sum is one batched product with a dense (N_s, N) weight matrix per rule when
        most of its entries are edges, else a sparse (CSR) product; the second a sparse one."""
        layout = self._layouts.get(id(shard))
        if layout is None:
            layout = self._layouts[id(shard)] = _CombineLayout.of(shard, len(self._weight_rows))
        n_agents, n_receivers = self.edges.n_agents, shard.edges.n_agents
        attacked = attack_values is not None and shard.attacked.numel()
        honest = weights.index_fill(1, shard.attacked, 0.0) if attacked else weights
        if layout.dense is not None:
            matrix = weights.new_zeros((weights.shape[0], n_receivers, n_agents))
            matrix.view(-1).index_copy_(0, layout.dense, honest.reshape(-1))
            out = torch.bmm(matrix, psi)
        else:
            offsets, columns = layout.sparse  # type: ignore[misc]
            flat = segment_sums(offsets, columns, honest.reshape(-1), psi.flatten(0, 1))
            out = flat.view(weights.shape[0], n_receivers, -1)
        if attacked:
            assert attack_values is not None
            offsets, columns = layout.attacked
            values = weights.index_select(1, shard.attacked).reshape(-1)
            flat = segment_sums(offsets, columns, values, attack_values.flatten(0, 1))
            out += flat.view(out.shape)
        return out

    def _attack(
        self, i: int, previous: Tensor, psi: Tensor, batch: Any
    ) -> tuple[tuple[Tensor, Tensor | None] | None, Tensor | None, Tensor]:
        """What the Byzantine senders send, and their own models if the attack sets them
        ((R, n_b, d), or None). Messages are either per attacked edge, (R, B, d) with non-finite
        ones zeroed and their (R, B) finite mask (None when every message is finite), or, for an
        attack that broadcasts one finite message per sender, folded into the models every
        receiver hears (psi with the Byzantine rows replaced): then the first is None and the
        round's edges are all combined and scored from those models."""
        assert self.attack is not None
        context = self.attack_context

        def loss_of(candidates: Tensor) -> Tensor:
            return self.task.edge_losses(candidates, context.receivers, batch)

        inputs = AttackInputs(context, i, psi, previous, loss_of)
        name = self.attack.name
        shape = (psi.shape[0], self.byzantine_ids.numel(), psi.shape[2])
        broadcast = self.attack.broadcast(inputs)
        if broadcast is not None:
            broadcast = _checked(broadcast, shape, f"{name}.broadcast", "(R, n_b, d)")
            broadcast = broadcast.to(psi.dtype)
            sent = broadcast.index_select(1, context.sender_rank)
        else:
            expected = (psi.shape[0], self.attack_edges.numel(), psi.shape[2])
            sent = _checked(self.attack.messages(inputs), expected, f"{name}.messages", "(R, B, d)")
        own = self.attack.own_models(inputs, sent)
        if own is not None:
            own = _checked(own, shape, f"{name}.own_models", "(R, n_b, d)").to(psi.dtype)
        sent = sent.to(psi.dtype)
        if math.isfinite(float(sent.sum())):  # then no entry is NaN or infinite
            if broadcast is not None:
                return None, own, psi.index_copy(1, self.byzantine_ids, broadcast)
            return (sent, None), own, psi
        sent_finite = torch.isfinite(sent).all(-1)
        return (sent.masked_fill(~sent_finite[..., None], 0.0), sent_finite), own, psi

    def run(
        self,
        state: SimState | None = None,
        rounds: int | None = None,
        on_round: Callable[[SimState, RoundOutput], None] | None = None,
    ) -> SimState:
        """Run ``rounds`` rounds (default: the task's whole schedule) from ``state``."""
        state = self.init_state() if state is None else state
        rounds = self.task.n_rounds - state.iteration if rounds is None else rounds
        with torch.inference_mode():
            for _ in range(rounds):
                state, output = self._step(state)
                if on_round is not None:
                    on_round(state, output)
        return state
