"""The interface between the engine and the rules that combine received messages.

A rule sees one round of one network: every edge's received message, the receivers' own models,
and (when it asks for them) the loss of every message on its receiver's current batch. It returns
every agent's combined model and, where the notion exists, the weight c_lk it gave each edge.
Rules are pure: the state they keep across rounds (accumulated scores) is passed in and returned.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, ClassVar, Protocol

import torch
from annotated_types import Gt, Interval
from torch import Tensor

from byzmtl.neighbourhoods import Neighbourhoods
from byzmtl.ops import squared_norm
from byzmtl.registry import Registry


@dataclass(frozen=True, eq=False)
class RuleState:
    """What a rule carries from round to round, by layout: ``edges`` holds per-edge tensors
    (first dimension E, in edge order), ``agents`` per-agent tensors (first dimension N). The
    engine cuts both when it combines a shard of receivers (a range of agents with their edges)
    and pastes the shards' new states back together."""

    edges: dict[str, Tensor] = field(default_factory=dict)
    agents: dict[str, Tensor] = field(default_factory=dict)

    def cut(self, edges: slice, agents: slice) -> RuleState:
        """The part of this state that belongs to the edges and agents of one shard."""
        return RuleState(
            {key: value[edges] for key, value in self.edges.items()},
            {key: value[agents] for key, value in self.agents.items()},
        )

    def as_dict(self) -> dict[str, dict[str, Tensor]]:
        """Plain dictionaries (for checkpoints)."""
        return {"edges": dict(self.edges), "agents": dict(self.agents)}

    @classmethod
    def from_dict(cls, record: dict[str, dict[str, Tensor]]) -> RuleState:
        return cls(dict(record["edges"]), dict(record["agents"]))

    @classmethod
    def joined(cls, parts: Sequence[RuleState]) -> RuleState:
        """One state from the states of consecutive shards that cover the graph in order."""
        first = parts[0]
        return cls(
            {key: torch.cat([part.edges[key] for part in parts]) for key in first.edges},
            {key: torch.cat([part.agents[key] for part in parts]) for key in first.agents},
        )


class RuleAssumptionError(ValueError):
    """A rule's assumption fails on the given graph (the message names the agent and why)."""


class LazyMessages(Protocol):
    """The messages of one round as the engine keeps them: built only when a rule reads them."""

    def tensor(self) -> Tensor:
        """(E, d): the message received on each edge."""

    def squared_distances(self, targets: Tensor) -> Tensor:
        """(E,): ||m_lk - targets_k||^2 for every edge (k, l), ``targets`` (N, d)."""


@dataclass(eq=False, slots=True)
class RuleInputs:
    """One round as a rule sees it (one network, one replica).

    ``received`` is the (E, d) tensor of messages or the engine's lazy view of it: rules read
    ``messages`` (built on first use) or ``squared_distances`` (which the engine computes without
    building the messages where that is cheaper), so that a rule that never looks at the
    messages, like the loss rule, costs nothing per edge and coordinate."""

    edges: Neighbourhoods
    received: Tensor | LazyMessages  # non-finite messages are zeroed
    finite: Tensor  # (E,) bool: the message as sent was finite (False: NaN/Inf were zeroed)
    all_finite: bool  # every message of the round is finite (``finite`` is all True)
    previous: Tensor  # (N, d): w_k(i-1), every agent's model before this round
    psi: Tensor  # (N, d): psi_k, every agent's model after its local step
    losses: Tensor | None  # (E,): l_k(message) on receiver k's batch, +inf if not finite
    iteration: int

    @property
    def messages(self) -> Tensor:
        """(E, d): the message received on each edge (zeroed where it was not finite)."""
        received = self.received
        return received if isinstance(received, Tensor) else received.tensor()

    def squared_distances(self, targets: Tensor) -> Tensor:
        """(E,): ||m_lk - targets_k||^2 for every edge (k, l), ``targets`` (N, d) per receiver."""
        if isinstance(self.received, Tensor):
            return squared_norm(self.received - targets.index_select(0, self.edges.receivers))
        return self.received.squared_distances(targets)

    @classmethod
    def sent(
        cls,
        edges: Neighbourhoods,
        psi: Tensor,
        previous: Tensor | None = None,
        losses: Tensor | None = None,
        iteration: int = 0,
    ) -> RuleInputs:
        """The round in which every agent l sends its own psi_l to all its out-neighbours (for
        examples and tests); ``previous`` defaults to ``psi``."""
        return cls(
            edges=edges,
            received=psi.index_select(0, edges.senders),
            finite=torch.ones(edges.n_edges, dtype=torch.bool, device=psi.device),
            all_finite=True,
            previous=psi if previous is None else previous,
            psi=psi,
            losses=losses,
            iteration=iteration,
        )


@dataclass(frozen=True, eq=False)
class Combination:
    """A rule's output: the new models and, where defined, the per-edge weights c_lk.

    ``models`` None means "combine by the weights": the engine then forms
    w_k = sum_l c_lk m_lk for all such rules in one sparse product."""

    models: Tensor | None  # (N, d)
    weights: Tensor | None  # (E,) or None for aggregators without a weight per edge


class Rule(ABC):
    """Base class of all rules. Subclasses are dataclasses registered in ``byzmtl.rules.RULES``."""

    name: ClassVar[str]
    needs_losses: ClassVar[bool] = False
    # run-wide settings (fields of the run configuration, e.g. nu and r0) the rule takes where
    # its own rule_params leave them out
    shared_settings: ClassVar[tuple[str, ...]] = ()

    def check(self, edges: Neighbourhoods) -> None:  # noqa: B027 - optional hook
        """Raise :class:`RuleAssumptionError` naming the first agent whose neighbourhood breaks
        the rule's assumptions (agent ``edges.first + k`` for row k: a partitioned run's rank
        checks its own receivers, and every rank raises the first failing rank's error). The
        default rule assumes nothing."""

    def init_state(self, edges: Neighbourhoods, dtype: torch.dtype) -> RuleState:
        """The state carried between rounds (per-edge and per-agent tensors); empty by default."""
        return RuleState()

    @abstractmethod
    def step(self, x: RuleInputs, state: RuleState) -> tuple[Combination, RuleState]:
        """Combine one round's messages; return the new models and the new state."""


class WeightRule(Rule):
    """A rule that gives every edge an affinity a_lk >= 0 and combines with the weights

        c_lk = a_lk / sum over m in N_k of a_mk,     w_k = sum over l in N_k of c_lk * m_lk.

    :meth:`Neighbourhoods.normalise` turns any affinities into weights (a receiver whose
    affinities are all 0 keeps itself); scores are best inverted with :func:`inverse`, whose
    affinities never overflow a sum. The engine normalises and combines all weight rules of a
    run at once; ``step`` does it for one.
    """

    @abstractmethod
    def affinities(self, x: RuleInputs, state: RuleState) -> tuple[Tensor, RuleState]:
        """(E,) non-negative affinities (any scale per receiver); and the new state."""

    def weights(self, x: RuleInputs, state: RuleState) -> tuple[Tensor, RuleState]:
        """(E,) weights c_lk, non-negative and summing to one over each neighbourhood."""
        affinities, state = self.affinities(x, state)
        return x.edges.normalise(affinities), state

    def step(self, x: RuleInputs, state: RuleState) -> tuple[Combination, RuleState]:
        weights, state = self.weights(x, state)
        models = x.edges.combine(weights[None], x.messages[None])[0]
        return Combination(models, weights), state


def inverse(scores: Tensor, edges: Neighbourhoods) -> Tensor:
    """(E,) 1 / r_lk for non-negative scores, r_lk floored at 2 |N_k| / finfo.max (see
    :meth:`Neighbourhoods.score_floor`): 1 / 0 is then the largest affinity whose sum over any
    neighbourhood stays finite, and 1 / +inf is 0."""
    return torch.maximum(scores, edges.score_floor(scores.dtype)).reciprocal_()


def power_of_two_below(magnitudes: Tensor, limits: Tensor | float) -> Tensor:
    """Powers of two s <= 1, one per finite magnitude m >= 0, such that m * s < limit (limits
    >= 1, one for all or one per magnitude); s = 1 wherever m is below 2^t, the largest power
    of two <= limit. Multiplying by s is exact (short of underflow), so values scaled by s keep
    their order and their ratios."""
    limits = torch.as_tensor(limits, dtype=magnitudes.dtype, device=magnitudes.device)
    top = torch.frexp(limits).exponent - 1
    shift = (top - torch.frexp(magnitudes).exponent).clamp_max_(0)
    return torch.exp2(shift.to(magnitudes.dtype))


def accumulate(previous: Tensor, new: Tensor, nu: float) -> Tensor:
    """The forgetting recursion r <- (1 - nu) * r + nu * new (an +inf input keeps r at +inf)."""
    return torch.mul(previous, 1.0 - nu).add_(new, alpha=nu)


Forgetting = Annotated[float, Interval(gt=0, lt=1)]
"""The forgetting factor nu of accumulated scores, in (0, 1)."""

InitialScore = Annotated[float, Gt(0)]
"""The initial accumulated score r0: positive (and, like every parameter, finite)."""


RULES: Registry[Rule] = Registry("rule")


def check_hooks(rule: object) -> None:
    """Raise :class:`RuleAssumptionError` where ``rule`` lacks a method the engine calls
    (``check``, ``init_state``, and ``affinities`` for a weight rule, else ``step``), or its
    ``needs_losses`` is not True or False: before the first round, not in it."""
    name = getattr(rule, "name", type(rule).__name__)
    combining = "affinities" if isinstance(rule, WeightRule) else "step"
    for hook in ("check", "init_state", combining):
        if not callable(getattr(rule, hook, None)):
            raise RuleAssumptionError(
                f"{name}: no {hook}() method (a rule derives from byzmtl.rules.Rule)"
            )
    needs = getattr(rule, "needs_losses", None)
    if not isinstance(needs, bool):
        raise RuleAssumptionError(f"{name}: needs_losses must be True or False, got {needs!r}")
