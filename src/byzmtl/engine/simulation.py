"""The diffusion engine: one adapt-then-combine round, vectorised over agents, edges and rules.

Every round, for every agent k of every replica (one replica per rule, all fed the same data):

    psi_k   = local step of w_k on k's current batch              (adapt: task.adapt)
    m_lk    = psi_l, or the attack's message when l is Byzantine   (send)
    s_lk    = l_k(m_lk), the loss of the message on k's batch      (score, if a rule asks)
    a_lk    = rule(m_.k, s_.k, state)                              (weigh)
    w_k     = sum over l of c_lk m_lk, c_lk = a_lk / sum_m a_mk    (combine)
    metrics = task.metrics(w)                                      (record)

Models of all agents live in one tensor of shape (replicas, agents, parameters); there is no
Python loop over agents or edges. Weigh and combine run shard by shard (contiguous ranges of
receivers, :mod:`byzmtl.engine.shards`), which keeps temporaries in cache and changes no
result. Messages are never copied edge by edge unless a rule reads them one by one
(:mod:`byzmtl.engine.messages`), and weight rules combine straight from the models heard
(:mod:`byzmtl.engine.combine`); on dense graphs the loss of every model on every agent's batch
is computed for all pairs at once (a task's ``sender_losses``).

Byzantine agents' own models follow their local step only (or stay at their initial value when
the attack does not train), unless the attack sets them (``Attack.own_models``); only what they
send matters. Normal agents are contained (:mod:`byzmtl.engine.containment`): their models are
finite after every round, whatever they receive.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from byzmtl import rng
from byzmtl.attacks.base import Attack, AttackContext
from byzmtl.attacks.base import check_hooks as check_attack_hooks
from byzmtl.engine.combine import Combiner
from byzmtl.engine.containment import count_contained, keep_finite
from byzmtl.engine.messages import MessageBuffers, ShardMessages
from byzmtl.engine.ranks import Ranks
from byzmtl.engine.sending import Heard, attack_inputs, send
from byzmtl.engine.shards import SHARD_EDGES, Shard, make_shards
from byzmtl.engine.state import RoundOutput, SimState
from byzmtl.graph import Graph
from byzmtl.graph_part import GraphPart, PartOutline
from byzmtl.neighbourhoods import Neighbourhoods
from byzmtl.protocols import ParameterTensors, SenderLosses, Task
from byzmtl.rules.base import Combination, Rule, RuleInputs, RuleState, WeightRule
from byzmtl.rules.base import check_hooks as check_rule_hooks


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


def checked_byzantine(
    task: Task,
    graph: Graph | GraphPart,
    rules: Sequence[Rule],
    byzantine: Sequence[int] | np.ndarray,
) -> np.ndarray:
    """The sorted Byzantine ids of a simulation of ``task`` on ``graph`` under ``rules``, or a
    one-line ValueError where the graph and task disagree on the agents, there is no rule, or
    an id is not an agent."""
    if graph.n_agents != task.n_agents:
        raise ValueError(f"graph has {graph.n_agents} agents, task has {task.n_agents}")
    if not rules:
        raise ValueError("a simulation needs at least one rule")
    return np.unique(_agent_ids(byzantine, graph.n_agents))


def cat_releasing(pieces: list[Tensor], dim: int = 0) -> Tensor:
    """``torch.cat(pieces, dim)``, the same tensor, dropping the list's reference to each piece
    as soon as it is copied (the list ends empty): a piece nothing else holds is freed before
    the next one is copied."""
    first = pieces[0]
    rest = (first.shape[:dim], first.shape[dim + 1 :])
    if any(
        p.dtype != first.dtype
        or p.device != first.device
        or (p.shape[:dim], p.shape[dim + 1 :]) != rest
        for p in pieces
    ):
        out = torch.cat(pieces, dim)  # torch's own rules (promotion, errors)
        pieces.clear()
        return out
    shape = list(first.shape)
    shape[dim] = sum(piece.shape[dim] for piece in pieces)
    out = first.new_empty(shape)
    del first
    at = 0
    for i in range(len(pieces)):
        piece, pieces[i] = pieces[i], None  # type: ignore[call-overload]
        out.narrow(dim, at, piece.shape[dim]).copy_(piece)
        at += piece.shape[dim]
        del piece
    pieces.clear()
    return out


@dataclass(frozen=True, eq=False)
class Round:
    """One round as the score, weigh and combine steps see it."""

    iteration: int
    previous: Tensor  # (R, N, d) w(i-1)
    psi: Tensor  # (R, N, d) each agent's own step
    heard: Heard  # what the receivers hear
    batch: Any
    pair_losses: Tensor | None = None  # (R_scored, N, N) every model heard on every batch


_Part = tuple[Tensor, list[Tensor | None], list[RuleState]]  # models, weights, rule states


@dataclass(frozen=True, eq=False)
class _Front:
    """A round up to its join: the round, the task's new state, the rejected local steps, and
    the weighed and combined shards (models, weights, rule states of each)."""

    round_: Round
    task_state: dict[str, Tensor]
    failed_steps: Tensor | None
    parts: list[_Part]


class Simulation:
    """A network of agents learning one task each, run under several rules at once.

    ``rules`` are independent replicas of the same network: they see the same data, the same
    attack randomness and the same Byzantine agents, and differ only in how they combine.
    Large networks are weighed and combined shard by shard (contiguous ranges of receivers of
    at most ``shard_edges`` edges x replicas). With ``ranks`` set, the shards are split over
    the processes of a torch.distributed group (:mod:`byzmtl.engine.ranks`); the rounds are
    bit for bit those of one process.
    """

    holds_own_agents: ClassVar[bool] = False  # a rank of several holds its own agents only

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
        ids = checked_byzantine(task, graph, rules, byzantine)
        self.task, self.rules, self.attack = task, list(rules), attack
        self.graph: Graph | PartOutline = graph  # a partitioned run's rank: its part's outline
        self.seed, self.dtype, self.device = seed, dtype, torch.device(device)
        self.keys = rng.agent_keys(graph.n_agents) if keys is None else np.asarray(keys, np.uint64)
        self.edges = Neighbourhoods.from_graph(graph, self.device)
        for rule in self.rules:
            check_rule_hooks(rule)
            rule.check(self.edges)
        if attack is not None:
            check_attack_hooks(attack)
        flags = np.zeros(graph.n_agents, dtype=bool)
        flags[ids] = True
        self.byzantine = torch.as_tensor(flags, device=self.device)
        self.normal = ~self.byzantine
        self.byzantine_ids = torch.as_tensor(ids, device=self.device)
        self.attack_edges = torch.as_tensor(
            np.flatnonzero(flags[graph.senders]), device=self.device
        )
        if self.attack_edges.numel() and attack is None:
            raise ValueError("Byzantine agents need an attack")
        sizes = task.parameter_sizes if isinstance(task, ParameterTensors) else None
        self.attack_context = AttackContext(
            seed, self.keys, self.edges, self.byzantine, self.attack_edges, sizes
        )
        if attack is not None and ids.size:
            attack.check(self.attack_context, task)
        self._choose_steps()
        self.dense = graph.n_agents**2 <= 2 * graph.n_edges
        scores_pairs = self.scored and self.dense and isinstance(task, SenderLosses)
        self._pair_scorer: SenderLosses | None = task if scores_pairs else None  # type: ignore[assignment]
        self._use_shards(
            make_shards(self.edges, self.attack_edges, max(1, shard_edges // len(rules)))
        )
        self.ranks: Ranks | None = None  # set: weigh and combine split over processes

    def _choose_steps(self) -> None:
        """The replicas whose rule scores messages, and every rule's step, chosen once."""
        self.scored = [r for r, rule in enumerate(self.rules) if rule.needs_losses]
        contiguous = bool(self.scored) and self.scored == list(
            range(self.scored[0], self.scored[-1] + 1)
        )
        self._scored_rows: slice | Tensor = (  # a slice where it can be: a view, not a copy
            slice(self.scored[0], self.scored[-1] + 1)
            if contiguous
            else torch.as_tensor(self.scored, dtype=torch.long, device=self.device)
        )
        self._combine = Combiner(self.rules, self.device)
        self._weighs = [  # each rule's step for one round, chosen once
            rule.affinities if isinstance(rule, WeightRule) else rule.step for rule in self.rules
        ]

    def _use_shards(self, shards: list[Shard]) -> None:
        """Weigh and combine in ``shards``, with their message buffers and all-true masks."""
        self.shards = shards
        self._buffers = MessageBuffers(self.shards)
        self._all_finite = {  # per shard size: one all-true (E_s,) mask per replica
            shard.n_edges: torch.ones(
                (self.replicas, shard.n_edges), dtype=torch.bool, device=self.device
            ).unbind(0)
            for shard in self.shards
        }

    @property
    def replicas(self) -> int:
        return len(self.rules)

    def init_state(self) -> SimState:
        models = self.task.init_models(self.replicas).to(self.device, self.dtype)
        if not bool(torch.isfinite(models).all()):
            raise ValueError("the task's initial models are not all finite")
        rule_states = [rule.init_state(self.edges, self.dtype) for rule in self.rules]
        return SimState(0, models, rule_states, self.task.init_state(models))

    def step(self, state: SimState) -> tuple[SimState, RoundOutput]:
        """One round: adapt, send, score, weigh, combine, record."""
        with torch.inference_mode():
            return self._step(state)

    def _step(self, state: SimState) -> tuple[SimState, RoundOutput]:
        every = range(len(self.shards))
        if self.ranks is None:
            front = self._front(state, every)
            parts = front.parts
        else:  # this rank's shards here, the others' from their ranks (byzmtl.engine.ranks)
            front, parts = self.ranks.exchange(
                lambda owned: self._front(state, owned),
                lambda front: front.parts,
                len(self.shards),
                self.device,
            )
        round_, i = front.round_, state.iteration
        new, weights, rule_states = self._joined(parts)  # empties parts (and front.parts)
        new, failed_combinations = keep_finite(new, round_.psi)
        new = self._byzantine_models(new, round_)
        contained = count_contained(
            state.contained, self.normal, front.failed_steps, failed_combinations
        )
        # record
        metrics = self.task.metrics(new, round_.batch, i)
        next_state = SimState(i + 1, new, rule_states, front.task_state, contained)
        return next_state, RoundOutput(metrics, weights)

    def _front(self, state: SimState, shards: range) -> _Front:
        """Adapt, send and score for every agent; weigh and combine the given shards."""
        i, previous = state.iteration, state.models
        batch = self.task.batch(i)
        # adapt: every agent's local step (rejected where it is not finite)
        psi, task_state = self._adapt(previous, batch, state.task_state, i)
        psi, failed_steps = keep_finite(psi, previous)
        # send: what every receiver hears
        round_ = Round(i, previous, psi, self._send(i, previous, psi, batch), batch)
        # score: on dense graphs, every model heard on every agent's batch at once
        round_ = self._score(round_)
        # weigh and combine, shard by shard
        return _Front(round_, task_state, failed_steps, self._parts(shards, round_, state))

    def _parts(self, shards: range, round_: Round, state: SimState) -> list[_Part]:
        """Each shard's new models, weights and rule states. In one process they are written
        into whole-graph tensors as each shard is done, while its values are still in cache
        (one part returned); a rank of stage 1 returns its shards' parts for the exchange."""
        states = state.rule_states
        if (self.ranks is not None and not self.holds_own_agents) or len(shards) == 1:
            return [self._weigh_and_combine(self.shards[s], round_, states) for s in shards]
        whole: _Part | None = None
        for s in shards:
            shard = self.shards[s]
            part = self._weigh_and_combine(shard, round_, states)
            whole = whole or self._empty_whole(part)
            models, weights, new_states = whole
            models[:, shard.agents] = part[0]
            for r in range(self.replicas):
                shard_weights = part[1][r]
                if shard_weights is not None:
                    weights[r][shard.edge_range] = shard_weights  # type: ignore[index]
                for key, value in part[2][r].edges.items():
                    new_states[r].edges[key][shard.edge_range] = value
                for key, value in part[2][r].agents.items():
                    new_states[r].agents[key][shard.agents] = value
        assert whole is not None
        return [whole]

    def _empty_whole(self, part: _Part) -> _Part:
        """Whole-graph tensors shaped like the shard ``part``'s, to be filled shard by shard."""
        n, e = self.edges.n_agents, self.edges.n_edges
        models = part[0].new_empty((part[0].shape[0], n, *part[0].shape[2:]))
        weights = [None if w is None else w.new_empty((e, *w.shape[1:])) for w in part[1]]
        states = [
            RuleState(
                {key: v.new_empty((e, *v.shape[1:])) for key, v in state.edges.items()},
                {key: v.new_empty((n, *v.shape[1:])) for key, v in state.agents.items()},
            )
            for state in part[2]
        ]
        return models, weights, states

    def _adapt(
        self, previous: Tensor, batch: Any, task_state: dict[str, Tensor], i: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """psi after every agent's local step (on poisoned data where the attack says so);
        Byzantine agents that do not train keep their model, psi_b = w_b."""
        attack = self.attack if self.byzantine_ids.numel() else None
        training = (
            batch if attack is None else attack.training_batch(self.task, batch, self.byzantine)
        )
        psi, task_state = self.task.adapt(previous, training, task_state, i)
        if attack is not None and not attack.trains:
            frozen = previous.index_select(1, self.byzantine_ids)
            psi = psi.index_copy(1, self.byzantine_ids, frozen)
        return psi, task_state

    def _send(self, i: int, previous: Tensor, psi: Tensor, batch: Any) -> Heard:
        if self.attack is None or not self.attack_edges.numel():
            return Heard(psi, None, None, None)
        inputs = attack_inputs(self.attack_context, self.task, i, psi, previous, batch)
        return send(self.attack, self.attack_context, inputs, self.attack_edges.numel())

    def _score(self, round_: Round) -> Round:
        if self._pair_scorer is None:
            return round_
        pairs = self._pair_scorer.sender_losses(round_.heard.psi[self._scored_rows], round_.batch)
        return replace(round_, pair_losses=pairs)

    def _weigh_and_combine(
        self, shard: Shard, round_: Round, states: list[RuleState]
    ) -> tuple[Tensor, list[Tensor | None], list[RuleState]]:
        """New models of the shard's receivers (R, N_s, d), every rule's edge weights and new
        state, from the shard's part of the rules' states."""
        heard = round_.heard
        attack_values, finite = heard.attack, heard.finite
        if not shard.attacked.numel():
            attack_values = finite = None
        elif not shard.whole:
            if attack_values is not None:
                attack_values = attack_values.index_select(1, shard.attacked_rows)
            if finite is not None:
                finite = finite.index_select(1, shard.attacked_rows)
        oks: Sequence[Tensor] = self._all_finite[shard.n_edges]
        masks = None
        if finite is not None:
            masks = torch.ones((self.replicas, shard.n_edges), dtype=torch.bool, device=self.device)
            masks[:, shard.attacked] = finite
            oks = masks.unbind(0)
        buffer = self._buffers.of(heard.psi, shard)
        received = ShardMessages(heard.psi, shard, attack_values, buffer)
        losses = self._losses(shard, round_, received, attack_values)
        if losses is not None and masks is not None:
            losses = losses.masked_fill(~masks[self._scored_rows], torch.inf)
        previous, psi = round_.previous, round_.psi
        if not shard.whole:
            previous, psi = previous[:, shard.agents], psi[:, shard.agents]
            states = [state.cut(shard.edge_range, shard.agents) for state in states]
        outputs: list[Tensor | Combination] = []
        new_states = []
        for r, weigh in enumerate(self._weighs):
            inputs = RuleInputs(
                shard.edges, received.replica(r), oks[r], finite is None, previous[r], psi[r],
                None if losses is None or r not in self.scored else losses[self.scored.index(r)],
                round_.iteration,
            )  # fmt: skip
            output, state = weigh(inputs, states[r])
            outputs.append(output)
            new_states.append(state)
        models, weights = self._combine(shard, outputs, heard.psi, attack_values)
        return models, weights, new_states

    def _losses(
        self,
        shard: Shard,
        round_: Round,
        received: ShardMessages,
        attack_values: Tensor | None,
    ) -> Tensor | None:
        """(R_scored, E_s) loss of every message on its receiver's batch, +inf where it is not
        finite: from the round's all-pairs losses where the task gave them (the attacked edges
        scored one by one), else edge by edge on the gathered messages."""
        if not self.scored:
            return None
        if round_.pair_losses is None:
            messages = received.tensor()[self._scored_rows]
            raw = self.task.edge_losses(messages, shard.receivers, round_.batch)
        else:
            raw = round_.pair_losses.flatten(1).index_select(1, shard.pairs)
            if attack_values is not None:
                attacked = self.task.edge_losses(
                    attack_values[self._scored_rows], shard.attacked_receivers, round_.batch
                )
                raw.index_copy_(1, shard.attacked, attacked)
        return raw.nan_to_num_(nan=torch.inf, posinf=torch.inf)

    def _joined(self, parts: list[_Part]) -> _Part:
        """The shards' models, weights and rule states as whole-graph tensors. Empties
        ``parts``: each shard's piece is released as soon as it is copied, so that the join
        holds the whole round's outputs about once, not twice (as ``torch.cat`` would)."""
        if len(parts) == 1:
            return parts.pop()
        models = [part[0] for part in parts]
        weights: list[list[Tensor | None]] = [[] for _ in range(self.replicas)]
        edges: list[dict[str, list[Tensor]]] = [{} for _ in range(self.replicas)]
        agents: list[dict[str, list[Tensor]]] = [{} for _ in range(self.replicas)]
        for part in parts:
            for r in range(self.replicas):
                weights[r].append(part[1][r])
                for key, value in part[2][r].edges.items():
                    edges[r].setdefault(key, []).append(value)
                for key, value in part[2][r].agents.items():
                    agents[r].setdefault(key, []).append(value)
        parts.clear()
        joined_weights = [
            None if pieces[0] is None else cat_releasing(pieces)  # type: ignore[arg-type]
            for pieces in weights
        ]
        states = [
            RuleState(
                {key: cat_releasing(pieces) for key, pieces in edges[r].items()},
                {key: cat_releasing(pieces) for key, pieces in agents[r].items()},
            )
            for r in range(self.replicas)
        ]
        return cat_releasing(models, 1), joined_weights, states

    def _byzantine_models(self, new: Tensor, round_: Round) -> Tensor:
        """Byzantine agents do not combine: w_b = psi_b, or what the attack sets (if finite)."""
        if not self.byzantine_ids.numel():
            return new
        kept = round_.psi.index_select(1, self.byzantine_ids)
        own = round_.heard.own
        if own is not None:
            kept = torch.where(torch.isfinite(own).all(-1, keepdim=True), own, kept)
        return new.index_copy_(1, self.byzantine_ids, kept)

    def whole_state(self, state: SimState) -> SimState:
        """The whole network's state from what this process holds: ``state`` itself (a
        partitioned run's ranks join their parts, :mod:`byzmtl.engine.partition`)."""
        return state

    def containment(self, state: SimState) -> Tensor | None:
        """The whole network's containment counts ((R, 2): failed local steps, failed
        combinations) from what this process holds: ``state``'s (a partitioned run's ranks add
        theirs)."""
        return state.contained

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
                del output  # its edge weights go before the next round makes its own
        return state
