"""The interface between the engine and Byzantine behaviours.

Each round, after every agent's local step, the engine builds the honest messages
psi_l -> k for every edge, then asks the attack for the messages of the edges whose sender is
Byzantine. An attack may send a different message to every receiver, and may send anything
(NaN, Inf, huge values): receivers must survive it. Attacks are pure functions of their inputs;
their randomness is keyed on (seed, attacker, receiver, iteration) through :mod:`byzmtl.rng`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from byzmtl import rng
from byzmtl.registry import Registry
from byzmtl.rules.base import Neighbourhoods


@dataclass(eq=False)
class AttackContext:
    """What the attackers know that does not change between rounds (they are omniscient)."""

    seed: int
    keys: np.ndarray  # (N,) uint64 agent identities (randomness is keyed on them)
    edges: Neighbourhoods  # the whole graph
    byzantine: Tensor  # (N,) bool
    attack_edges: Tensor  # (B,) long: the edges whose sender is Byzantine
    cache: dict[tuple, Tensor] = field(default_factory=dict)  # round-independent draws

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
    honest: Tensor  # (R, E, d): the message each edge would carry from an honest sender
    loss_of: Callable[[Tensor], Tensor]  # (R, B, d) candidates -> (R, B) loss on receiver batches

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
        tensor like ``psi``."""
        it = self.iteration if iteration is None else iteration
        draws = rng.uniform(self.context.seed, stream, keys, it, size)
        return torch.as_tensor(draws, dtype=self.psi.dtype, device=self.psi.device)


class Attack(ABC):
    """Base class of all attacks: dataclasses registered in ``byzmtl.attacks.ATTACKS``.

    ``trains``: whether a Byzantine agent still runs the local step on its own data (its own
    model then follows no-cooperation learning); if not, its model stays at its initial value.
    """

    name: ClassVar[str]
    trains: bool

    @abstractmethod
    def messages(self, x: AttackInputs) -> Tensor:
        """(R, B, d): the message sent on each attacked edge, for each replica."""


ATTACKS: Registry[Attack] = Registry("attack")
