"""Partitioned runs: each rank of P processes holds only its own agents (stage 2 of the
distributed engine), with results bit-identical to one process.

The receivers are cut into P contiguous ranges of about E / P edges each (edges are sorted by
receiver, so a range's incoming edges are one contiguous slice of the edge list):

    rank r owns agents [a_r, a_(r+1)),   a_r = the first receiver whose edges start at or
    after floor(r E / P).

Rank r holds the models, learner and rule states and data of its agents only, and the edges
into them. Its *table* is its agents and its *halo* H_r (the senders of those edges owned by
other ranks, and the agents the attack reads beyond its receivers' neighbourhoods,
:meth:`byzmtl.attacks.Attack.reads`: ``mimic``'s copied agent), in increasing global id, so
that every sender keeps its order. Each round:

    psi_k, k in own           local step of the rank's agents          (task restricted to them)
    psi_h, w_h(i-1), h in H_r  received from their owners               (one all_to_all_single)
    m_lk, s_lk, a_lk, w_k      send, score, weigh and combine the rank's receivers, on the table

The attack sees the table as its network: every attack that runs partitioned
(``Attack.neighbourhood_only``) computes the message on edge (l, k) from k's neighbourhood, the
agents it reads, k's batch and draws keyed on the agents' identities, which the table holds
exactly (``AttackContext.agents``: each row's global id). Every kernel
then runs per receiver on the inputs it has in one process, in the same edge order, so every
value is bit for bit the one-process value.

Each round's metrics (R, N_r) and per-receiver sums of the rank's edge weights stay on the
rank: the recording reduces them to the pieces of its statistics (``round_summary``: sums of
whole blocks of agents, the values of at most two partial blocks per statistic, min and max;
:mod:`byzmtl.split_stats`), and those are gathered in rank order (one pickled gather,
:meth:`byzmtl.engine.ranks.Ranks.collect`, which also carries any rank's failure), so that every
rank records the one-process statistics bit for bit. A state is always a rank's part: ``run``
starts from one and returns one, and a checkpoint holds one file per rank, each sent to rank 0
in turn (:mod:`byzmtl.checkpoints`); :meth:`PartitionedSimulation.whole_state` joins the parts
where a caller wants the whole (one broadcast per rank into each whole tensor). Per round a
rank receives its halo, 8 k R d |H_r| bytes (k = 2 with an attack: psi and w(i-1), else 1),
and the others' pieces, at most about 16 B R S m 2^15 bytes from each rank (S subsets, m
metrics and diagnostics), whatever the network's size (all its values where percentiles are
asked for).

A geometric graph is never built whole in a partitioned run: each rank builds the edges into
its own receivers (:func:`built_part`; the geometric builder gives the whole graph's edges for
any range of receivers) as a :class:`~byzmtl.graph_part.GraphPart`; other graphs are built
whole and cut. The engine holds the part's edges once, in its own numbering (receivers from 0,
senders as table rows), and keeps only the part's outline (where each rank's agents and
edges begin). Every rank builds the whole case study and keeps its agents' part (the task
restricted to them), the run its task groups (``Experiment.groups``, a byte per agent for up to
256 groups) and its Byzantine ids. Not partitioned yet: the whole case study exists during the
setup.

A run is partitioned when :func:`can_partition` holds: the task can be restricted
(:class:`byzmtl.protocols.Restrictable`), the attack is neighbourhood-only (or nobody is
Byzantine), no shard of one process could be dense (twice the largest in-degree is below the
number of agents: a rank's shards are always combined as sparse, one process's sparse ones the
same way), and every rank has agents.
Otherwise a run of P processes uses stage 1 (:mod:`byzmtl.engine.ranks`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from byzmtl import rng
from byzmtl.attacks.base import Attack, AttackAssumptionError, AttackContext
from byzmtl.attacks.base import check_hooks as check_attack_hooks
from byzmtl.engine.containment import count_contained, keep_finite
from byzmtl.engine.ranks import Ranks, Traffic, compact, lost_peers
from byzmtl.engine.sending import Heard, send
from byzmtl.engine.shards import SHARD_EDGES, make_shards
from byzmtl.engine.simulation import Round, Simulation, checked_byzantine
from byzmtl.engine.state import RoundOutput, SimState
from byzmtl.graph import Graph
from byzmtl.graph_part import GraphPart, PartOutline
from byzmtl.neighbourhoods import Neighbourhoods
from byzmtl.protocols import ParameterTensors, Restrictable, Task
from byzmtl.rules.base import Rule, RuleState
from byzmtl.rules.base import check_hooks as check_rule_hooks


def agent_bounds(degrees: np.ndarray, world: int) -> np.ndarray:
    """(world + 1,) first agent of each rank (and N): rank r's receivers start at the first
    agent whose incoming edges start at or after floor(r E / world)."""
    offsets = np.concatenate([[0], np.cumsum(degrees)])
    targets = np.arange(world + 1) * int(offsets[-1]) // world
    bounds = np.searchsorted(offsets, targets, side="left")
    bounds[-1] = len(degrees)
    return bounds.astype(np.int64)


def can_partition_run(task: Task, attack: Attack | None, byzantine: np.ndarray, world: int) -> bool:
    """Whether a run of ``world`` processes can hold each rank's agents only, as far as its
    task and attack tell (the graph decides the rest: :func:`can_partition`)."""
    if world < 2 or not isinstance(task, Restrictable):
        return False
    return not len(byzantine) or bool(getattr(attack, "neighbourhood_only", False))


def can_partition(
    task: Task,
    graph: Graph | GraphPart,
    attack: Attack | None,
    byzantine: np.ndarray,
    world: int,
) -> bool:
    """Whether a run of ``world`` processes can hold each rank's agents only (see the module)."""
    if not can_partition_run(task, attack, byzantine, world):
        return False
    degrees = graph.degrees
    return (
        2 * int(degrees.max()) < graph.n_agents and np.diff(agent_bounds(degrees, world)).min() > 0
    )


def built_part(
    n_agents: int,
    build: Callable[[slice], np.ndarray],
    positions: np.ndarray | None,
    ranks: Ranks,
) -> GraphPart:
    """This rank's part of a graph built per range of receivers, never whole: ``build(agents)``
    gives the sorted keys ``receiver * N + sender`` of the edges into ``agents``, the same
    edges whatever the range. Each rank builds an even share of the agents, the ranks gather
    their degrees, and each rank then keeps its range of :func:`agent_bounds`, building the
    edges of its range that its share lacked. Collective."""
    n, rank, world = n_agents, ranks.rank, ranks.world
    share = slice(rank * n // world, (rank + 1) * n // world)

    def counted() -> tuple[list[np.ndarray], np.ndarray]:
        keys = build(share)
        starts = np.searchsorted(keys, np.arange(share.start, share.stop + 1) * n)
        return [keys], np.diff(starts).astype(np.int32)  # half the bytes to gather

    (held, _), counts = ranks.collect(counted, lambda value: value[1])
    degrees = np.concatenate(counts).astype(np.int64)
    bounds = agent_bounds(degrees, world)
    first, last = int(bounds[rank]), int(bounds[rank + 1])

    def kept() -> GraphPart:
        share_keys = held.pop()  # the only reference: freed once its own part is copied
        low, high = max(first, share.start), min(last, share.stop)
        lo, hi = np.searchsorted(share_keys, [low * n, high * n])
        pieces = [share_keys[lo:hi].copy()] if low < high else []
        del share_keys
        if first < share.start:
            pieces.insert(0, build(slice(first, min(share.start, last))))
        if last > share.stop:
            pieces.append(build(slice(max(share.stop, first), last)))
        own = pieces[0] if len(pieces) == 1 else np.concatenate([np.zeros(0, np.int64), *pieces])
        del pieces
        return GraphPart.from_keys(n, slice(first, last), own, degrees, positions)

    return ranks.agree(kept)


def own_part(graph: Graph, ranks: Ranks) -> GraphPart:
    """This rank's part of a graph built whole (its range of :func:`agent_bounds`)."""
    bounds = agent_bounds(graph.degrees, ranks.world)
    return GraphPart.of(graph, slice(int(bounds[ranks.rank]), int(bounds[ranks.rank + 1])))


@dataclass(frozen=True, eq=False)
class Halo:
    """Rank ``rank``'s part of the graph: its agents, its table and what it exchanges."""

    rank: int
    agents: slice  # own agents, global ids a..b-1
    edge_range: slice  # the edges into them
    table: np.ndarray  # (T,) global ids of own agents and halo, increasing
    own: slice  # own agents' rows in the table
    halo_rows: Tensor  # (H,) table rows of the halo, in the order they arrive
    received: list[int]  # rows received from each rank
    send_rows: Tensor  # (S,) own-agent rows sent, to rank 0 first
    sent: list[int]  # rows sent to each rank

    @classmethod
    def of(
        cls,
        outline: PartOutline,
        rank: int,
        halos: Sequence[np.ndarray],
        device: torch.device,
    ) -> Halo:
        """Rank ``rank``'s halo from its part's outline (the ranks' cuts) and every rank's halo
        (``halos[q]``: the sorted agents outside rank q's part that its table needs,
        :func:`halo_agents`)."""
        bounds, world = np.asarray(outline.agent_cuts), len(outline.agent_cuts) - 1
        first, last = outline.agent_cuts[rank], outline.agent_cuts[rank + 1]
        if (outline.agents.start, outline.agents.stop) != (first, last):
            held = f"{outline.agents.start}..{outline.agents.stop - 1}"
            raise ValueError(f"rank {rank} holds agents {held}, its range is {first}..{last - 1}")
        mine = halos[rank]
        table = np.union1d(np.arange(first, last), mine)
        start = int(np.searchsorted(table, first))
        owners = np.searchsorted(bounds, mine, side="right") - 1
        received = np.bincount(owners, minlength=world).tolist()  # mine sorted: owners ascend
        to_send = []
        for q in range(world):
            wanted = halos[q] if q != rank else np.empty(0, np.int64)
            to_send.append(wanted[(wanted >= first) & (wanted < last)] - first)
        rows = np.concatenate(to_send) if to_send else np.empty(0, np.int64)

        def tensor(values: np.ndarray) -> Tensor:
            return torch.as_tensor(values, dtype=torch.long, device=device)

        return cls(
            rank,
            slice(first, last),
            slice(outline.edge_cuts[rank], outline.edge_cuts[rank + 1]),
            table,
            slice(start, start + last - first),
            tensor(np.searchsorted(table, mine)),
            received,
            tensor(rows),
            [len(r) for r in to_send],
        )

    def exchange(self, rows: Tensor, traffic: Traffic) -> Tensor:
        """The halo's rows (H, ...) from their owners, for this rank's own rows (N_r, ...):
        one ``all_to_all_single``, counted in ``traffic``. Collective."""
        import torch.distributed as dist

        outgoing = rows.index_select(0, self.send_rows).contiguous()
        incoming = rows.new_empty((sum(self.received), *rows.shape[1:]))
        started = time.perf_counter()
        try:
            dist.all_to_all_single(incoming, outgoing, self.received, self.sent)
        except (RuntimeError, OSError) as error:  # gloo and nccl report lost peers so
            raise lost_peers(self.rank, error) from error
        traffic.halo_seconds.append(time.perf_counter() - started)
        traffic.halo_sent.append(outgoing.numel() * outgoing.element_size())
        traffic.halo_received.append(incoming.numel() * incoming.element_size())
        return incoming


class PartitionedSimulation(Simulation):
    """A :class:`Simulation` of which this rank holds its own agents only (see the module):
    its states are the rank's parts. ``step`` and ``run`` are collective: every rank of
    ``ranks`` calls them, in step."""

    holds_own_agents = True  # its shards are written into its agents' tensors as they are done

    def __init__(
        self,
        task: Task,
        graph: Graph | GraphPart,
        rules: Sequence[Rule],
        attack: Attack | None,
        byzantine: Sequence[int] | np.ndarray,
        seed: int,
        ranks: Ranks,
        keys: np.ndarray | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
        shard_edges: int = SHARD_EDGES,
    ) -> None:
        ids = checked_byzantine(task, graph, rules, byzantine)
        if not isinstance(task, Restrictable):
            raise TypeError(f"{type(task).__name__} cannot be restricted to a rank's agents")
        part = own_part(graph, ranks) if isinstance(graph, Graph) else graph
        outline = part.outline(agent_bounds(part.degrees, ranks.world))
        self.graph = outline  # the engine holds the edges
        self.rules, self.attack = list(rules), attack
        self.ranks, self.group = ranks, ranks  # ``group``: the same, never None
        # set (by the run's recording): each round's output carries, gathered in rank order,
        # what it returns for the rank's metrics and weights (small: the pieces of the
        # statistics, byzmtl.split_stats)
        self.round_summary: Callable[[Any, list[Tensor | None]], Any] | None = None
        self.seed, self.dtype, self.device = seed, dtype, torch.device(device)
        keys = rng.agent_keys(part.n_agents) if keys is None else np.asarray(keys, np.uint64)
        flags = np.zeros(part.n_agents, dtype=bool)
        flags[ids] = True
        halos = ranks.gathered(halo_agents(part, attack, flags))
        self.halo = halo = Halo.of(outline, ranks.rank, halos, self.device)
        table, own = halo.table, halo.own
        self.task = task.restricted(np.arange(halo.agents.start, halo.agents.stop))
        self.keys = keys[halo.agents].copy()  # not a view: the whole is not kept
        self.n_total = part.n_agents
        senders = np.searchsorted(table, part.senders)
        receivers = part.receivers - halo.agents.start

        def tensor(values: np.ndarray) -> Tensor:
            return torch.as_tensor(values, dtype=torch.long, device=self.device)

        degrees = part.degrees[halo.agents]
        self_edges = np.flatnonzero(part.senders == part.receivers)
        self.edges = Neighbourhoods(
            tensor(receivers),
            tensor(senders),
            tensor(self_edges),
            tensor(degrees),
            len(degrees),
            first=halo.agents.start,
        )
        table_flags = flags[table]
        own_flags = flags[halo.agents]
        self.byzantine = torch.as_tensor(own_flags, device=self.device)
        self.normal = ~self.byzantine
        self.byzantine_ids = torch.as_tensor(np.flatnonzero(own_flags), device=self.device)
        self.attack_edges = tensor(np.flatnonzero(table_flags[senders]))
        self._attacked_receivers = self.edges.receivers.index_select(0, self.attack_edges)
        table_degrees = np.zeros(len(table), dtype=np.int64)
        table_degrees[own] = degrees
        table_self = np.full(len(table), self_edges[0] if len(self_edges) else 0)
        table_self[own] = self_edges
        on_table = Neighbourhoods(  # the attack's network: edges into own agents, on the table
            tensor(receivers + own.start),
            tensor(senders),
            tensor(table_self),
            tensor(table_degrees),
            len(table),
        )
        sizes = task.parameter_sizes if isinstance(task, ParameterTensors) else None
        self.attack_context = AttackContext(
            seed,
            keys[table],
            on_table,
            torch.as_tensor(table_flags, device=self.device),
            self.attack_edges,
            sizes,
            agents=table,
            network_size=part.n_agents,
        )
        ranks.agree(self._check)
        self._own_byzantine = torch.searchsorted(
            self.attack_context.byzantine_ids, self.byzantine_ids + own.start
        )
        self._choose_steps()
        self.dense, self._pair_scorer = False, None
        per_rule = max(1, shard_edges // len(self.rules))
        self._use_shards(make_shards(self.edges, self.attack_edges, per_rule, len(table)))

    def _check(self) -> None:
        """The one-process checks of the rules and the attack, on this rank's part (the rules'
        on its receivers, numbered from ``edges.first``; the attack's on its table); agreed, so
        that every rank raises the first failing rank's error, the one a single process
        raises where the check is per receiver."""
        for rule in self.rules:
            check_rule_hooks(rule)
            rule.check(self.edges)
        if self.attack is not None:
            check_attack_hooks(self.attack)
        if self.attack_edges.numel() and self.attack is None:
            raise ValueError("Byzantine agents need an attack")
        if self.attack is not None and bool(self.attack_context.byzantine.any()):
            self.attack.check(self.attack_context, self.task)

    def _step(self, state: SimState) -> tuple[SimState, RoundOutput]:
        i, previous = state.iteration, state.models
        failure: Exception | None = None
        try:
            batch = self.task.batch(i)
            psi, task_state = self._adapt(previous, batch, state.task_state, i)
            psi, failed_steps = keep_finite(psi, previous)
        except Exception as raised:  # reported in the gather below, after the exchange
            failure, psi = raised, previous
        tables = self._tables(previous, psi)

        def rest() -> tuple[SimState, RoundOutput]:
            if failure is not None:
                raise failure
            heard = self._send(i, tables[0], tables[1], batch)
            round_ = Round(i, previous, psi, heard, batch)
            new, weights, rule_states = self._joined(
                self._parts(range(len(self.shards)), round_, state)
            )
            new, failed_combinations = keep_finite(new, psi)
            new = self._byzantine_models(new, round_)
            contained = count_contained(
                state.contained, self.normal, failed_steps, failed_combinations
            )
            metrics = self.task.metrics(new, batch, i)
            next_state = SimState(i + 1, new, rule_states, task_state, contained)
            return next_state, RoundOutput(metrics, weights)

        def share(value: tuple[SimState, RoundOutput]) -> Any:
            summary = self.round_summary
            return None if summary is None else summary(value[1].metrics, value[1].weights)

        (next_state, output), shared = self.group.collect(rest, share)
        return next_state, RoundOutput(output.metrics, output.weights, shared)

    def _tables(self, previous: Tensor, psi: Tensor) -> tuple[Tensor, Tensor]:
        """(R, T, d) w(i-1) and psi of the table's agents: the rank's own, and the halo's from
        their owners (w(i-1) only when an attack may read it)."""
        halo, own = self.halo, self.halo.own
        sent = [psi] if self.attack is None else [psi, previous]
        incoming = halo.exchange(
            torch.stack(sent).permute(2, 0, 1, 3), self.group.traffic
        )  # (H, k, R, d)
        incoming = incoming.permute(1, 2, 0, 3)
        tables = []
        for j, rows in enumerate(sent):
            table = rows.new_empty((rows.shape[0], len(halo.table), rows.shape[2]))
            table[:, own] = rows
            table.index_copy_(1, halo.halo_rows, incoming[j])
            tables.append(table)
        return tables[-1], tables[0]

    def _send(self, i: int, previous: Tensor, psi: Tensor, batch: Any) -> Heard:
        """What the rank's receivers hear, from the tables ``previous`` and ``psi``."""
        if self.attack is None or not self.attack_edges.numel():
            return Heard(psi, None, None, None)
        from byzmtl.attacks.base import AttackInputs

        receivers = self._attacked_receivers

        def loss_of(candidates: Tensor) -> Tensor:
            return self.task.edge_losses(candidates, receivers, batch)

        inputs = AttackInputs(self.attack_context, i, psi, previous, loss_of)
        return send(self.attack, self.attack_context, inputs, self.attack_edges.numel())

    def _byzantine_models(self, new: Tensor, round_: Round) -> Tensor:
        """The rank's Byzantine agents: w_b = psi_b, or what the attack sets (if finite)."""
        if not self.byzantine_ids.numel():
            return new
        kept = round_.psi.index_select(1, self.byzantine_ids)
        own = round_.heard.own
        if own is not None:
            own = own.index_select(1, self._own_byzantine)
            kept = torch.where(torch.isfinite(own).all(-1, keepdim=True), own, kept)
        return new.index_copy_(1, self.byzantine_ids, kept)

    def containment(self, state: SimState) -> Tensor | None:
        """The whole network's containment counts: the sum of the ranks' counts of their own
        receivers (one gather). Collective."""
        own = None if state.contained is None else compact(state.contained)
        counts = [count for count in self.group.gathered(own) if count is not None]
        return torch.stack(counts).sum(0).to(self.device) if counts else None

    def whole_state(self, state: SimState) -> SimState:
        """The whole-graph state, on every rank, as one process holds it, from the ranks' parts
        (``state``, such as :meth:`run` returns): each tensor joined from the ranks' slices
        (:meth:`byzmtl.engine.ranks.Ranks.joined`: the whole held once, no gathered copies),
        8 R (E + d N) bytes on every rank. Collective."""
        assert isinstance(self.graph, PartOutline)
        agents, edges = self.graph.agent_cuts, self.graph.edge_cuts

        def joined(value: Tensor, dim: int, cuts: tuple[int, ...]) -> Tensor:
            return self.group.joined(value, dim, list(cuts)).to(self.device)

        rule_states = [
            RuleState(
                {key: joined(value, 0, edges) for key, value in rule_state.edges.items()},
                {key: joined(value, 0, agents) for key, value in rule_state.agents.items()},
            )
            for rule_state in state.rule_states
        ]
        task_state = {key: joined(value, 1, agents) for key, value in state.task_state.items()}
        models = joined(state.models, 1, agents)
        return SimState(state.iteration, models, rule_states, task_state, self.containment(state))


def halo_agents(part: GraphPart, attack: Attack | None, byzantine: np.ndarray) -> np.ndarray:
    """The agents outside the part that its table needs, sorted: its edges' senders and the
    agents the attack reads (:meth:`byzmtl.attacks.Attack.reads`; one without the hook fails
    the attack's checks)."""
    reads = getattr(attack, "reads", None)
    if not byzantine.any() or not callable(reads):
        return part.outside_senders()
    read = np.asarray(reads(byzantine), dtype=np.int64).reshape(-1)
    wrong = read[(read < 0) | (read >= part.n_agents)]
    if len(wrong):
        name = getattr(attack, "name", type(attack).__name__)
        raise AttackAssumptionError(
            f"{name}: reads() names agent {wrong[0]}, not in [0, {part.n_agents})"
        )
    inside = (read >= part.agents.start) & (read < part.agents.stop)
    return np.union1d(part.outside_senders(), read[~inside])
