"""The attacks of the paper's experiments, and malformed messages.

- ``constant``: the fake estimate of target localization. Attacker b draws once
  c_b = value + U[0, spread)^d and sends c_b to everyone, every round.
- ``scaled``: the model scaled by one random factor: m = a * psi_b, a ~ U[0, scale), drawn per
  message (attacker, receiver, round); with ``trains = False`` psi_b is the initial model.
- ``noise``: every coordinate replaced by random noise, m_j ~ U[low, high) per message.
- ``nan`` / ``inf``: every coordinate NaN / +Inf.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from byzmtl.attacks.base import ATTACKS, Attack, AttackInputs


def _for_every_replica(x: AttackInputs, messages: Tensor) -> Tensor:
    return messages.unsqueeze(0).expand(x.psi.shape[0], *messages.shape)


@ATTACKS.register("constant")
@dataclass
class Constant(Attack):
    """Send c_b = value + U[0, spread)^d, drawn once per attacker, to everyone."""

    value: float = 15.0
    spread: float = 1.0
    trains: bool = True

    def messages(self, x: AttackInputs) -> Tensor:
        memo = ("constant", self.value, self.spread, x.psi.shape[-1], x.psi.dtype)
        if memo not in x.context.cache:  # the draws do not depend on the round: make them once
            noise = x.uniform("attack-constant", x.context.sender_keys, x.psi.shape[-1], 0)
            x.context.cache[memo] = self.value + self.spread * noise
        return _for_every_replica(x, x.context.cache[memo])


@ATTACKS.register("scaled")
@dataclass
class Scaled(Attack):
    """Send a * psi_b with a ~ U[0, scale), one factor per message."""

    scale: float = 0.1
    trains: bool = True

    def messages(self, x: AttackInputs) -> Tensor:
        factor = self.scale * x.uniform("attack-scaled", x.context.edge_keys, 1)
        return x.psi.index_select(1, x.senders).mul_(factor)


@ATTACKS.register("noise")
@dataclass
class Noise(Attack):
    """Send pure noise: every coordinate U[low, high), drawn per message."""

    low: float = 0.0
    high: float = 0.1
    trains: bool = True

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"noise needs low < high, got [{self.low}, {self.high})")

    def messages(self, x: AttackInputs) -> Tensor:
        noise = x.uniform("attack-noise", x.context.edge_keys, x.psi.shape[-1])
        return _for_every_replica(x, self.low + (self.high - self.low) * noise)


@ATTACKS.register("nan")
@dataclass
class NotANumber(Attack):
    """Send a message whose every coordinate is NaN."""

    trains: bool = True

    def messages(self, x: AttackInputs) -> Tensor:
        return x.psi.new_full((x.psi.shape[0], len(x.senders), x.psi.shape[-1]), torch.nan)


@ATTACKS.register("inf")
@dataclass
class Infinite(Attack):
    """Send a message whose every coordinate is +Inf."""

    trains: bool = True

    def messages(self, x: AttackInputs) -> Tensor:
        return x.psi.new_full((x.psi.shape[0], len(x.senders), x.psi.shape[-1]), torch.inf)
