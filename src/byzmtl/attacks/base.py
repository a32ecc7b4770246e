"""The interface between the engine and Byzantine behaviours.

Each round, after every agent's local step, the engine builds the honest messages
psi_l -> k for every edge, then asks the attack for the messages of the edges whose sender is
Byzantine. An attack may send a different message to every receiver, and may send anything
(NaN, Inf, huge values): receivers must survive it. An attack may also set the Byzantine agents'
own models for the next round (``Attack.own_models``), for attacks whose senders keep what they
sent. Attacks are pure functions of their inputs; their randomness is keyed on (seed, attacker,
receiver, iteration) through :mod:`byzmtl.rng`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from byzmtl import rng
from byzmtl.neighbourhoods import Neighbourhoods
from byzmtl.registry import Registry


class AttackAssumptionError(ValueError):
    """An attack cannot run on this case study or network (the message says why)."""


@dataclass(eq=False)
class AttackContext:
    """What the attackers know that does not change between rounds (they are omniscient).

    Its N rows are the network's agents, or, in a run of several processes, a rank's table
    (its agents, their senders and what :meth:`Attack.reads` names): then ``agents`` gives each
    row's id in the network (increasing) and ``network_size`` the network's number of agents.
    """

    seed: int
    keys: np.ndarray  # (N,) uint64 agent identities (randomness is keyed on them)
    edges: Neighbourhoods  # the whole graph (a rank's table: the edges into its agents)
    byzantine: Tensor  # (N,) bool
    attack_edges: Tensor  # (B,) long: the edges whose sender is Byzantine
    parameter_sizes: tuple[int, ...] | None = None  # lengths of the model's parameter tensors
    agents: np.ndarray | None = None  # (N,) each row's network id; None: row k is agent k
    network_size: int | None = None  # the network's number of agents, when ``agents`` is given
    cache: dict[tuple, Tensor] = field(default_factory=dict)  # round-independent draws

    @property
    def n_network(self) -> int:
        """The number of agents in the network (more than the rows on a rank's table)."""
        return self.edges.n_agents if self.network_size is None else self.network_size

    def row(self, agent: int) -> int:
        """The row that holds the network's agent ``agent``."""
        if self.agents is None:
            return agent
        row = int(np.searchsorted(self.agents, agent))
        if row == len(self.agents) or int(self.agents[row]) != agent:
            raise LookupError(f"agent {agent} is not on this table (Attack.reads names it)")
        return row

    @cached_property
    def byzantine_ids(self) -> Tensor:
        """(n_b,) long: the Byzantine agents, in increasing order."""
        return torch.nonzero(self.byzantine).flatten()

    @cached_property
    def byzantine_keys(self) -> np.ndarray:
        """(n_b,) random-number key of each Byzantine agent."""
        return self.keys[self.byzantine_ids.cpu().numpy()]

    @cached_property
    def sender_rank(self) -> Tensor:
        """(B,) long: position of each attacked edge's sender in ``byzantine_ids``."""
        return torch.searchsorted(self.byzantine_ids, self.senders)

    def segments(self, dim: int) -> list[int]:
        """Lengths of the parameter tensors that make up a flat model of ``dim`` coordinates
        (one tensor when the task does not say)."""
        return [dim] if self.parameter_sizes is None else list(self.parameter_sizes)

    @cached_property
    def receivers(self) -> Tensor:
        """(B,) receiver of each attacked edge."""
        return self.edges.receivers[self.attack_edges]

    @cached_property
    def senders(self) -> Tensor:
        """(B,) Byzantine sender of each attacked edge."""
        return self.edges.senders[self.attack_edges]

    @cached_property
    def sender_keys(self) -> np.ndarray:
        """(B,) random-number key of each attacked edge's sender."""
        return self.keys[self.senders.cpu().numpy()]

    @cached_property
    def edge_keys(self) -> np.ndarray:
        """(B,) a random-number key per (sender, receiver) pair of the attacked edges."""
        return rng.pair_keys(self.sender_keys, self.keys[self.receivers.cpu().numpy()])


@dataclass(eq=False, slots=True)
class AttackInputs:
    """One round as the attackers see it."""

    context: AttackContext
    iteration: int
    psi: Tensor  # (R, N, d): every agent's model after its local step (one row per replica)
    previous: Tensor  # (R, N, d): every agent's model before the round
    loss_of: Callable[[Tensor], Tensor]  # (R, B, d) candidates -> (R, B) loss on receiver batches
    _honest: Tensor | None = None

    @property
    def honest(self) -> Tensor:
        """(R, E, d): the message each edge would carry from an honest sender, psi_l (built on
        first use: most attacks never need it)."""
        if self._honest is None:
            self._honest = self.psi.index_select(1, self.context.edges.senders)
        return self._honest

    @property
    def receivers(self) -> Tensor:
        return self.context.receivers

    @property
    def senders(self) -> Tensor:
        return self.context.senders

    def uniform(
        self, stream: str, keys: np.ndarray, size: int, iteration: int | None = None
    ) -> Tensor:
        """U[0, 1) draws of shape (len(keys), size), keyed on (seed, stream, key, round), as a
        tensor like ``psi``, drawn on its device (see :func:`byzmtl.rng.uniform_tensor`)."""
        it = self.iteration if iteration is None else iteration
        words = rng.key_tensor(keys, self.psi.device)
        return rng.uniform_tensor(self.context.seed, stream, words, it, size, self.psi.dtype)

    def normal(
        self, stream: str, keys: np.ndarray, size: int, iteration: int | None = None
    ) -> Tensor:
        """Standard normal draws like :meth:`uniform` (Box-Muller, :func:`byzmtl.rng.normal`)."""
        it = self.iteration if iteration is None else iteration
        words = rng.key_tensor(keys, self.psi.device)
        return rng.normal_tensor(self.context.seed, stream, words, it, size).to(self.psi.dtype)


class Attack(ABC):
    """Base class of all attacks: dataclasses registered in ``byzmtl.attacks.ATTACKS``.

    ``trains``: whether a Byzantine agent still runs the local step on its own data (its own
    model then follows no-cooperation learning); if not, its model stays at its initial value,
    unless ``own_models`` sets it.
    """

    name: ClassVar[str]
    trains: bool
    # The message on edge (l, k) depends only on k's neighbourhood (its senders' psi and
    # w(i-1), k's batch through ``loss_of``, its degree), on the agents ``reads`` names and on
    # draws keyed on agents: then a run of several processes holds each rank's agents only
    # (byzmtl.engine.partition). An attack that reads whole-network statistics keeps False.
    neighbourhood_only: ClassVar[bool] = False

    def check(self, context: AttackContext, task: Any) -> None:  # noqa: B027 - optional hook
        """Raise :class:`AttackAssumptionError` if the attack cannot run against ``task`` on this
        network (called once, before the first round, when there are Byzantine agents)."""

    def training_batch(self, task: Any, batch: Any, byzantine: Tensor) -> Any:
        """The data every agent takes its local step on this round: the honest ``batch``, unless
        the attack poisons the Byzantine agents' own data (``byzantine``: (N,) bool)."""
        return batch

    def reads(self, byzantine: np.ndarray) -> np.ndarray:
        """The agents, beyond its receivers' neighbourhoods, whose psi and w(i-1) the messages
        read (increasing network ids; ``byzantine``: the network's (N,) bool flags); none by
        default. A run of several processes puts them on every rank's table, where
        :meth:`AttackContext.row` finds them."""
        return np.empty(0, dtype=np.int64)

    @abstractmethod
    def messages(self, x: AttackInputs) -> Tensor:
        """(R, B, d): the message sent on each attacked edge, for each replica."""

    def broadcast(self, x: AttackInputs) -> Tensor | None:
        """(R, n_b, d): the one message each Byzantine agent (in the order of
        ``x.context.byzantine_ids``) sends to all its receivers this round; or None (the
        default) when messages differ per receiver and come from ``messages``. An attack that
        broadcasts lets the engine score and combine its messages like honest models (all pairs
        at once on dense graphs)."""
        return None

    def own_models(self, x: AttackInputs, sent: Tensor) -> Tensor | None:
        """The Byzantine agents' own models after this round, (R, n_b, d) in the order of
        ``x.context.byzantine_ids``, given the round's messages ``sent`` (R, B, d); or None (the
        default): each keeps psi_b, its model after its local step. Non-finite rows are
        ignored (that agent keeps psi_b)."""
        return None


ATTACKS: Registry[Attack] = Registry("attack")

HOOKS = ("check", "reads", "training_batch", "messages", "broadcast", "own_models")


def check_hooks(attack: object) -> None:
    """Raise :class:`AttackAssumptionError` where ``attack`` lacks a hook the engine calls, or
    ``trains`` is not True or False (an attack that does not derive from :class:`Attack`, or
    a dataclass that leaves ``trains`` out): before the first round, not in it."""
    name = getattr(attack, "name", type(attack).__name__)
    for hook in HOOKS:
        if not callable(getattr(attack, hook, None)):
            raise AttackAssumptionError(
                f"{name}: no {hook}() method (an attack derives from byzmtl.attacks.Attack)"
            )
    trains = getattr(attack, "trains", None)
    if not isinstance(trains, bool):
        raise AttackAssumptionError(f"{name}: trains must be True or False, got {trains!r}")


def one_round(
    attack: Attack,
    edges: Neighbourhoods,
    psi: Tensor,
    byzantine: Sequence[int],
    previous: Tensor | None = None,
    loss_of: Callable[[Tensor], Tensor] | None = None,
    seed: int = 0,
    iteration: int = 0,
) -> Tensor:
    """The (B, d) messages ``attack`` sends on the edges whose sender is in ``byzantine`` (in edge
    order), in one round of a single replica where agents hold ``psi`` (N, d) after their local
    step and ``previous`` before it (default ``psi``); for examples and tests. ``loss_of`` maps
    (1, B, d) candidates to (1, B) losses on the receivers' batches, for attacks that need it."""

    def no_data(candidates: Tensor) -> Tensor:
        raise ValueError(f"attack {attack.name!r} scores candidates: give one_round a loss_of")

    flags = torch.zeros(edges.n_agents, dtype=torch.bool, device=psi.device)
    flags[list(byzantine)] = True
    attacked = torch.nonzero(flags[edges.senders]).flatten()
    context = AttackContext(seed, rng.agent_keys(edges.n_agents), edges, flags, attacked)
    before = psi if previous is None else previous
    inputs = AttackInputs(
        context,
        iteration,
        psi[None],
        before[None],
        no_data if loss_of is None else loss_of,
    )
    return attack.messages(inputs)[0]
