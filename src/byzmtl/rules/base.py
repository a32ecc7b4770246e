"""The interface between the engine and the rules that combine received messages.

A rule sees one round of one network: every edge's received message, the receivers' own models,
and (when it asks for them) the loss of every message on its receiver's current batch. It returns
every agent's combined model and, where the notion exists, the weight c_lk it gave each edge.
Rules are pure: the state they keep across rounds (accumulated scores) is passed in and returned.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar, Protocol

import numpy as np
import torch
from torch import Tensor

from byzmtl.graph import Graph
from byzmtl.ops import segment_sums, squared_norm
from byzmtl.registry import Registry

RuleState = dict[str, Tensor]


class RuleAssumptionError(ValueError):
    """A rule's assumption fails on the given graph (the message names the agent and why)."""


@dataclass(frozen=True, eq=False)
class Neighbourhoods:
    """A graph's edges as torch tensors, sorted by receiver (see :mod:`byzmtl.graph`).

    The engine may hand a rule the neighbourhoods of a shard of receivers: receivers are then
    numbered 0..n_agents-1 within the shard (as are the rows of ``RuleInputs.previous`` and
    ``psi``), while ``senders`` keep their ids in the whole graph (to tell senders apart, never
    to index models)."""

    receivers: Tensor  # (E,) long
    senders: Tensor  # (E,) long
    self_edges: Tensor  # (N,) long: index of agent k's self-loop
    degrees: Tensor  # (N,) long: |N_k|
    n_agents: int
    _cache: dict[tuple, Tensor | tuple[Tensor, Tensor]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_graph(cls, graph: Graph, device: torch.device | str = "cpu") -> Neighbourhoods:
        def to(a: np.ndarray) -> Tensor:
            return torch.as_tensor(a, dtype=torch.long, device=device)

        return cls(
            to(graph.receivers),
            to(graph.senders),
            to(graph.self_edges),
            to(graph.degrees),
            graph.n_agents,
        )

    @property
    def n_edges(self) -> int:
        return self.receivers.numel()

    @cached_property
    def is_self(self) -> Tensor:
        """(E,) bool: the edge is a self-loop."""
        flags = torch.zeros(self.n_edges, dtype=torch.bool, device=self.receivers.device)
        return flags.index_fill_(0, self.self_edges, True)

    def self_weights(self, dtype: torch.dtype) -> Tensor:
        """(E,): 1 on self-loops, 0 elsewhere (the weights of no cooperation)."""
        key = ("self_weights", dtype)
        if key not in self._cache:
            self._cache[key] = self.is_self.to(dtype)
        return self._cache[key]  # type: ignore[return-value]

    def score_floor(self, dtype: torch.dtype) -> Tensor:
        """(E,): 2 |N_k| / finfo.max on every edge (k, l), the smallest score :func:`inverse`
        inverts: below it 1 / score would let a neighbourhood's sum of affinities overflow."""
        key = ("score_floor", dtype)
        if key not in self._cache:
            degrees = self.degrees.to(dtype).index_select(0, self.receivers)
            self._cache[key] = degrees * (2.0 / torch.finfo(dtype).max)
        return self._cache[key]  # type: ignore[return-value]

    @cached_property
    def receiver_self_edge(self) -> Tensor:
        """(E,) long: for edge (k, l), the index of k's self-loop (where r_kk lives)."""
        return self.self_edges[self.receivers]

    @cached_property
    def padded(self) -> tuple[Tensor, Tensor]:
        """(N, max degree) edge indices of every neighbourhood, and the mask of real entries;
        padding points at the receiver's self-loop so that gathers stay in range."""
        offsets = torch.cumsum(self.degrees, 0) - self.degrees
        slot = torch.arange(int(self.degrees.max()), device=self.degrees.device)
        mask = slot[None, :] < self.degrees[:, None]
        index = torch.where(mask, offsets[:, None] + slot[None, :], self.self_edges[:, None])
        return index, mask

    def combine(self, weights: Tensor, messages: Tensor) -> Tensor:
        """w_k = sum over l in N_k of c_lk * m_lk, for every receiver of every replica:
        weights (R, E) and messages (R, E, d) -> (R, N, d). Non-finite messages must be zeroed;
        for weights from :meth:`normalise` the result is finite (:func:`within_range`)."""
        replicas, n_edges, dim = messages.shape
        key = ("layout", replicas)
        if key not in self._cache:
            counts = self.degrees.repeat(replicas)
            offsets = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
            self._cache[key] = (offsets, torch.arange(replicas * n_edges, device=offsets.device))
        offsets, columns = self._cache[key]  # type: ignore[misc]
        flat = segment_sums(offsets, columns, weights.reshape(-1), messages.reshape(-1, dim))
        return within_range(flat.reshape(replicas, self.n_agents, dim))

    def _replicated_receivers(self, replicas: int) -> Tensor:
        """(R * E,) receiver of each edge of R stacked copies of the graph, copy r's agents
        numbered r * N .. r * N + N - 1."""
        key = ("receivers", replicas)
        if key not in self._cache:
            shift = torch.arange(replicas, device=self.receivers.device)[:, None] * self.n_agents
            self._cache[key] = (self.receivers[None, :] + shift).reshape(-1)
        return self._cache[key]  # type: ignore[return-value]

    def normalise(self, affinities: Tensor) -> Tensor:
        """c_lk = a_lk / sum over m in N_k of a_mk, for (E,) or (R, E) affinities.

        Sound for any affinities: the weights are finite, >= 0 and sum to one over every
        neighbourhood. NaN and negative affinities count as 0; where a receiver's affinities
        are not all finite or their sum overflows, they are first divided by their largest
        (then +inf affinities share the weight equally and the others get 0); a receiver whose
        affinities are all 0 keeps itself (c_kk = 1). The check costs one read of the
        affinities; receivers whose affinities are finite, >= 0 and of finite positive sum
        get exactly a_lk / sum."""
        flat = affinities.reshape(-1)
        replicas = flat.numel() // self.n_edges
        index = self._replicated_receivers(replicas)
        totals = flat.new_zeros(replicas * self.n_agents).index_add_(0, index, flat)
        low, high = torch.aminmax(totals)
        if not (low > 0 and high < torch.inf and flat.min() >= 0):
            return self._normalise_any(flat, index).view(affinities.shape)
        per_edge = totals.index_select(0, index)
        return torch.div(flat, per_edge, out=per_edge).view(affinities.shape)

    def _normalise_any(self, flat: Tensor, index: Tensor) -> Tensor:
        """:meth:`normalise` for affinities that are not all finite and >= 0 with a finite
        positive sum per receiver (see there)."""
        size = index.numel() // self.n_edges * self.n_agents
        clean = torch.fmax(flat, flat.new_zeros(()))  # NaN and negative -> 0
        totals = clean.new_zeros(size).index_add_(0, index, clean)
        sound = ((totals > 0) & (totals < torch.inf)).index_select(0, index)
        peak = clean.new_zeros(size).scatter_reduce_(0, index, clean, "amax").index_select(0, index)
        scaled = torch.where(peak < torch.inf, clean / peak, (clean == torch.inf).to(clean.dtype))
        self_loops = self.is_self.repeat(index.numel() // self.n_edges)
        scaled = torch.where(peak > 0, scaled, self_loops.to(clean.dtype))
        shares = torch.where(sound, clean, scaled)
        totals = shares.new_zeros(size).index_add_(0, index, shares)
        return shares / totals.index_select(0, index)

    def sum_per_receiver(self, values: Tensor) -> Tensor:
        """sum over l in N_k of values[(k, l)], for every k; ``values`` is (E,) or (E, d)."""
        out = values.new_zeros((self.n_agents, *values.shape[1:]))
        return out.index_add_(0, self.receivers, values)


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

    def check(self, edges: Neighbourhoods) -> None:  # noqa: B027 - optional hook
        """Raise :class:`RuleAssumptionError` naming the first agent whose neighbourhood breaks
        the rule's assumptions. The default rule assumes nothing."""

    def init_state(self, edges: Neighbourhoods, dtype: torch.dtype) -> RuleState:
        """The state carried between rounds (per-edge tensors); empty by default."""
        return {}

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


def within_range(models: Tensor) -> Tensor:
    """``models`` clamped (in place) to +-finfo.max: a convex combination of finite values is
    finite, but its rounding can carry it past the largest float, to +-inf."""
    largest = torch.finfo(models.dtype).max
    return models.clamp_(-largest, largest)


def accumulate(previous: Tensor, new: Tensor, nu: float) -> Tensor:
    """The forgetting recursion r <- (1 - nu) * r + nu * new (an +inf input keeps r at +inf)."""
    return torch.mul(previous, 1.0 - nu).add_(new, alpha=nu)


def check_forgetting(nu: float, r0: float) -> None:
    """Validate the forgetting factor and the initial score shared by score-based rules."""
    if not 0.0 < nu < 1.0:
        raise ValueError(f"nu must lie in (0, 1), got {nu}")
    if not r0 > 0.0 or not np.isfinite(r0):
        raise ValueError(f"r0 must be positive and finite, got {r0}")


RULES: Registry[Rule] = Registry("rule")
