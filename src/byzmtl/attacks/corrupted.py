"""Attacks that corrupt a model the attacker has: sign flip, Gaussian noise, mimicry.

- ``sign-flip``: m_bk = -scale * psi_b, the attacker's own model with its sign flipped.
- ``gaussian``: m_bk = psi_b + sigma * n_bk, n_bk ~ N(0, I) drawn per message (attacker,
  receiver, round); unlike ``noise``, which replaces the model, it stays around an honest one.
- ``mimic``: every Byzantine agent sends psi_a of one honest agent a to everyone (Karimireddy,
  He and Jaggi, ICLR 2022): in multi-task learning it pulls receivers towards a's task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import numpy as np
import torch
from annotated_types import Ge, Gt
from torch import Tensor

from byzmtl.attacks.base import (
    ATTACKS,
    Attack,
    AttackAssumptionError,
    AttackContext,
    AttackInputs,
)


@ATTACKS.register("sign-flip")
@dataclass
class SignFlip(Attack):
    """Send the attacker's own model with its sign flipped: m_bk = -scale * psi_b.

    >>> import torch
    >>> from byzmtl.attacks.base import one_round
    >>> from byzmtl.graph import complete
    >>> from byzmtl.neighbourhoods import Neighbourhoods
    >>> edges = Neighbourhoods.from_graph(complete(2))
    >>> psi = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    >>> one_round(SignFlip(), edges, psi, byzantine=[1]).tolist()  # edges 1 -> 0 and 1 -> 1
    [[-3.0, -4.0], [-3.0, -4.0]]
    """

    scale: Annotated[float, Gt(0)] = 1.0
    trains: bool = True
    neighbourhood_only: ClassVar[bool] = True

    def messages(self, x: AttackInputs) -> Tensor:
        """(R, B, d): -scale * psi_b on every attacked edge (b -> k)."""
        return x.psi[:, x.senders] * -self.scale


@ATTACKS.register("gaussian")
@dataclass
class Gaussian(Attack):
    """Send the attacker's own model plus Gaussian noise: m_bk = psi_b + sigma * n_bk.

    >>> import torch
    >>> from byzmtl.attacks.base import one_round
    >>> from byzmtl.graph import complete
    >>> from byzmtl.neighbourhoods import Neighbourhoods
    >>> edges = Neighbourhoods.from_graph(complete(2))
    >>> psi = torch.zeros(2, 20000, dtype=torch.float64)
    >>> round(float(one_round(Gaussian(sigma=3.0), edges, psi, byzantine=[0]).std()), 1)
    3.0
    """

    sigma: Annotated[float, Gt(0)] = 1.0
    trains: bool = True
    neighbourhood_only: ClassVar[bool] = True

    def messages(self, x: AttackInputs) -> Tensor:
        """(R, B, d): psi_b + sigma * n_bk, n_bk ~ N(0, I) keyed on (seed, edge, round)."""
        noise = x.normal("attack-gaussian", x.context.edge_keys, x.psi.shape[-1])
        return x.psi[:, x.senders] + self.sigma * noise


@ATTACKS.register("mimic")
@dataclass
class Mimic(Attack):
    """Every Byzantine agent sends the model of one honest agent, m_bk = psi_a, to everyone;
    ``agent`` is a (None: the honest agent of lowest id).

    >>> import torch
    >>> from byzmtl.attacks.base import one_round
    >>> from byzmtl.graph import complete
    >>> from byzmtl.neighbourhoods import Neighbourhoods
    >>> edges = Neighbourhoods.from_graph(complete(3))
    >>> psi = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
    >>> one_round(Mimic(agent=1), edges, psi, byzantine=[0]).flatten().tolist()
    [2.0, 2.0, 2.0]
    """

    agent: Annotated[int, Ge(0)] | None = None
    trains: bool = True
    neighbourhood_only: ClassVar[bool] = True  # its receivers' neighbourhoods and agent a

    def reads(self, byzantine: np.ndarray) -> np.ndarray:
        """Agent a: the given one (if it is in the network), or the honest agent of lowest id."""
        if self.agent is None:
            return np.flatnonzero(~byzantine)[:1]
        return np.array([self.agent] if self.agent < len(byzantine) else [], dtype=np.int64)

    def mimicked(self, context: AttackContext) -> int:
        """The row of the honest agent copied (on a rank's table, which holds a, the honest
        agent of lowest id is the network's)."""
        if self.agent is not None:
            return context.row(self.agent)
        return int(torch.nonzero(~context.byzantine)[0, 0])

    def check(self, context: AttackContext, task: Any) -> None:
        n = context.n_network
        if self.agent is not None and not 0 <= self.agent < n:
            raise AttackAssumptionError(f"mimic: agent {self.agent} is not in [0, {n})")
        if self.agent is not None and bool(context.byzantine[context.row(self.agent)]):
            raise AttackAssumptionError(f"mimic: agent {self.agent} is Byzantine, not honest")

    def messages(self, x: AttackInputs) -> Tensor:
        """(R, B, d): psi_a on every attacked edge."""
        memo = ("mimic", self.agent)
        if memo not in x.context.cache:  # round-independent: found once, kept on the device
            x.context.cache[memo] = x.psi.new_tensor([self.mimicked(x.context)], dtype=torch.long)
        copied = x.psi.index_select(1, x.context.cache[memo])
        return copied.expand(-1, len(x.senders), -1)
