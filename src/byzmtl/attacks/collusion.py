"""Omniscient, colluding attacks built from the honest messages each receiver gets.

For an attacked edge (b -> k), H_k are the honest senders of N_k (k itself included), B_k the
Byzantine ones, n_k = |N_k| and f_k = |B_k| (see :mod:`byzmtl.attacks.omniscient`). Every
Byzantine sender of N_k sends k the same message, crafted for k:

- ``alie`` (A Little Is Enough, Baruch, Baruch and Goldberg, NeurIPS 2019): per coordinate,
  m_bk = mean_H - z * std_H, with z from n_k and f_k as published: s = floor(n_k / 2 + 1) - f_k
  supporters are needed, and z = Phi^-1((n_k - s) / n_k) (s is kept >= 1 so that z is finite).
- ``ipm`` (inner-product manipulation, Xie, Koyejo and Gupta, UAI 2019), on model updates: the
  honest neighbours move k by Delta_k = mean_H(psi_l) - w_k(i-1) on average; the attackers send
  m_bk = w_k(i-1) - epsilon * Delta_k, the reversed (and scaled) update.
- ``dissensus`` (He, Karimireddy and Jaggi, 2022), graph-aware: cancel and reverse the pull of the
  honest neighbours on k, m_bk = psi_k - epsilon * sum over l in H_k of (psi_l - psi_k) / f_k, so
  that under plain averaging w_k = psi_k + (1 - epsilon) / n_k * sum over H_k of (psi_l - psi_k):
  epsilon > 1 pushes every receiver away from its neighbours' mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch
from annotated_types import Gt
from torch import Tensor

from byzmtl.attacks.base import ATTACKS, Attack, AttackInputs
from byzmtl.attacks.omniscient import honest_neighbours


def alie_z(n: Tensor, f: Tensor) -> Tensor:
    """z = Phi^-1((n - s) / n) with s = max(floor(n / 2 + 1) - f, 1), elementwise.

    >>> alie_z(torch.tensor([10, 50]), torch.tensor([2, 10])).tolist()  # doctest: +ELLIPSIS
    [0.2533..., 0.4676...]
    """
    supporters = (torch.div(n, 2, rounding_mode="floor") + 1 - f).clamp_min(1)
    return torch.special.ndtri((n - supporters).double() / n.double())


@ATTACKS.register("alie")
@dataclass
class ALittleIsEnough(Attack):
    """m_bk = mean over H_k of psi_l - z * std over H_k of psi_l (per coordinate), z as published
    from n_k and f_k (module docstring) unless ``z`` is given.

    >>> import torch
    >>> from byzmtl.attacks.base import one_round
    >>> from byzmtl.graph import complete
    >>> from byzmtl.neighbourhoods import Neighbourhoods
    >>> edges = Neighbourhoods.from_graph(complete(4))
    >>> psi = torch.tensor([[1.0], [2.0], [3.0], [9.0]], dtype=torch.float64)
    >>> one_round(ALittleIsEnough(z=1.0), edges, psi, byzantine=[3]).flatten().tolist()
    [1.0, 1.0, 1.0, 1.0]
    """

    z: float | None = None
    trains: bool = True
    neighbourhood_only: ClassVar[bool] = True

    def messages(self, x: AttackInputs) -> Tensor:
        """(R, B, d): mean_H - z * std_H at every attacked edge's receiver."""
        stats = honest_neighbours(x, std=True)
        assert stats.std is not None
        receivers = x.receivers
        if self.z is None:
            z = alie_z(x.context.edges.degrees[receivers], stats.byzantine[receivers])
            z = z.to(x.psi.dtype)[None, :, None]
        else:
            z = torch.tensor(self.z, dtype=x.psi.dtype, device=x.psi.device)
        return stats.mean[:, receivers] - z * stats.std[:, receivers]


@ATTACKS.register("ipm")
@dataclass
class InnerProductManipulation(Attack):
    """m_bk = w_k(i-1) - epsilon * (mean over H_k of psi_l - w_k(i-1)).

    >>> import torch
    >>> from byzmtl.attacks.base import one_round
    >>> from byzmtl.graph import complete
    >>> from byzmtl.neighbourhoods import Neighbourhoods
    >>> edges = Neighbourhoods.from_graph(complete(3))
    >>> before = torch.zeros(3, 1, dtype=torch.float64)
    >>> psi = torch.tensor([[1.0], [3.0], [7.0]], dtype=torch.float64)
    >>> one_round(InnerProductManipulation(epsilon=0.5), edges, psi, [2], before).flatten().tolist()
    [-1.0, -1.0, -1.0]
    """

    epsilon: Annotated[float, Gt(0)] = 0.1
    trains: bool = True
    neighbourhood_only: ClassVar[bool] = True

    def messages(self, x: AttackInputs) -> Tensor:
        """(R, B, d): the receiver's previous model moved against its honest neighbours' mean
        update."""
        mean = honest_neighbours(x).mean[:, x.receivers]
        before = x.previous[:, x.receivers]
        return before - self.epsilon * (mean - before)


@ATTACKS.register("dissensus")
@dataclass
class Dissensus(Attack):
    """m_bk = psi_k - epsilon * sum over l in H_k of (psi_l - psi_k) / f_k.

    >>> import torch
    >>> from byzmtl.attacks.base import one_round
    >>> from byzmtl.graph import complete
    >>> from byzmtl.neighbourhoods import Neighbourhoods
    >>> edges = Neighbourhoods.from_graph(complete(3))
    >>> psi = torch.tensor([[0.0], [2.0], [5.0]], dtype=torch.float64)
    >>> one_round(Dissensus(epsilon=1.0), edges, psi, byzantine=[2]).flatten().tolist()
    [-2.0, 4.0, 13.0]
    """

    epsilon: Annotated[float, Gt(0)] = 1.5
    trains: bool = True
    neighbourhood_only: ClassVar[bool] = True

    def messages(self, x: AttackInputs) -> Tensor:
        """(R, B, d): the message that reverses the honest neighbours' pull on the receiver."""
        stats = honest_neighbours(x)
        receivers = x.receivers
        own = x.psi[:, receivers]
        honest = stats.honest[receivers].to(x.psi.dtype)[None, :, None]
        pull = stats.mean[:, receivers] * honest - own * honest
        byzantine = stats.byzantine[receivers].clamp_min(1).to(x.psi.dtype)[None, :, None]
        return own - self.epsilon * pull / byzantine
