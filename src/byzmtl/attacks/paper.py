"""The attacks of the paper's experiments, and malformed messages.

- ``constant``: the fake estimate of target localization. Attacker b draws once
  c_b = value + U[0, spread)^d and sends c_b to everyone, every round.
- ``scaled``: the model scaled by one random factor: m = a * psi_b, a ~ U[0, scale), drawn per
  message (attacker, receiver, round); with ``trains = False`` psi_b is the initial model.
- ``paper-scaled``: the scaled-model attack as the authors' code ran it: one factor per
  parameter tensor and round, the same message to every receiver, and the attacker keeps what it
  sent as its own model, so its model and messages shrink geometrically towards zero.
- ``noise``: every coordinate replaced by random noise, m_j ~ U[low, high) per message.
- ``nan`` / ``inf``: every coordinate NaN / +Inf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch
from annotated_types import Gt
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
    neighbourhood_only: ClassVar[bool] = True

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

    scale: Annotated[float, Gt(0)] = 0.1
    trains: bool = True
    neighbourhood_only: ClassVar[bool] = True

    def messages(self, x: AttackInputs) -> Tensor:
        factor = self.scale * x.uniform("attack-scaled", x.context.edge_keys, 1)
        return x.psi.index_select(1, x.senders).mul_(factor)


@ATTACKS.register("paper-scaled")
@dataclass
class PaperScaled(Attack):
    """The scaled-model attack as the authors' code ran it (human activity recognition and
    digits). In round i, Byzantine agent b scales its model by one factor per parameter tensor t,

        m_b(i) = a_bt(i) * psi_b(i)   on the coordinates of tensor t,   a_bt(i) ~ U[0, scale),

    sends m_b(i) to every receiver, and keeps it: w_b(i) = m_b(i). Its model and all its later
    messages shrink geometrically towards zero. psi_b(i) is its local step from w_b(i-1) when the
    attack ``trains``, else w_b(i-1) itself (the authors' digits attackers do not train).

    >>> import torch
    >>> from byzmtl.attacks.base import one_round
    >>> from byzmtl.graph import complete
    >>> from byzmtl.neighbourhoods import Neighbourhoods
    >>> edges = Neighbourhoods.from_graph(complete(3))
    >>> psi = torch.ones(3, 2, dtype=torch.float64)
    >>> sent = one_round(PaperScaled(), edges, psi, byzantine=[1])  # edges 1 -> 0, 1 -> 1, 1 -> 2
    >>> bool((sent == sent[0]).all()), bool((sent < 0.1).all())  # one message, scaled below 0.1
    (True, True)
    """

    scale: Annotated[float, Gt(0)] = 0.1
    trains: bool = True
    neighbourhood_only: ClassVar[bool] = True

    def broadcast(self, x: AttackInputs) -> Tensor:
        """(R, n_b, d): every Byzantine agent's psi_b times its factors of this round."""
        psi = x.psi.index_select(1, x.context.byzantine_ids)
        sizes = x.context.segments(psi.shape[-1])
        factors = self.scale * x.uniform(
            "attack-paper-scaled", x.context.byzantine_keys, len(sizes)
        )
        repeats = torch.as_tensor(sizes, device=factors.device)
        return psi.mul_(factors.repeat_interleave(repeats, dim=1))

    def messages(self, x: AttackInputs) -> Tensor:
        return self.broadcast(x).index_select(1, x.context.sender_rank)

    def own_models(self, x: AttackInputs, sent: Tensor) -> Tensor:
        return self.broadcast(x)  # what it sent (the same draws)


@ATTACKS.register("noise")
@dataclass
class Noise(Attack):
    """Send pure noise: every coordinate U[low, high), drawn per message."""

    low: float = 0.0
    high: float = 0.1
    trains: bool = True
    neighbourhood_only: ClassVar[bool] = True

    def __post_init__(self) -> None:  # a relation between two parameters: the class's check
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
    neighbourhood_only: ClassVar[bool] = True

    def messages(self, x: AttackInputs) -> Tensor:
        return x.psi.new_full((x.psi.shape[0], len(x.senders), x.psi.shape[-1]), torch.nan)


@ATTACKS.register("inf")
@dataclass
class Infinite(Attack):
    """Send a message whose every coordinate is +Inf."""

    trains: bool = True
    neighbourhood_only: ClassVar[bool] = True

    def messages(self, x: AttackInputs) -> Tensor:
        return x.psi.new_full((x.psi.shape[0], len(x.senders), x.psi.shape[-1]), torch.inf)
