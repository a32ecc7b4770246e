"""What an omniscient attacker knows about each receiver's neighbourhood, per replica.

For a receiver k, H_k is the set of honest senders of N_k (k itself included when k is honest) and
B_k the Byzantine ones. The statistics of the honest messages psi_l, l in H_k, are segment sums
over edges (never a loop over agents); attacks read them at the receivers of their edges.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from byzmtl.attacks.base import AttackInputs


@dataclass(frozen=True, eq=False)
class HonestNeighbours:
    """Per receiver k: the honest messages of N_k, summarised."""

    mean: Tensor  # (R, N, d) mean of psi_l over l in H_k (0 when H_k is empty)
    std: Tensor | None  # (R, N, d) sample standard deviation over H_k (0 when |H_k| < 2)
    honest: Tensor  # (N,) long |H_k|
    byzantine: Tensor  # (N,) long |B_k|


def honest_neighbours(x: AttackInputs, std: bool = False) -> HonestNeighbours:
    """Mean (and, if asked, standard deviation) of the honest messages of every neighbourhood."""
    edges = x.context.edges
    honest = (~x.context.byzantine[edges.senders]).to(x.honest.dtype)
    count = edges.sum_per_receiver(honest)
    total = x.honest.new_zeros(x.psi.shape).index_add_(
        1, edges.receivers, x.honest * honest[:, None]
    )
    mean = total / count.clamp_min(1)[:, None]
    spread = None
    if std:
        deviations = (x.honest - mean[:, edges.receivers]) * honest[:, None]
        squares = x.honest.new_zeros(x.psi.shape).index_add_(
            1, edges.receivers, deviations.square()
        )
        spread = (squares / (count - 1).clamp_min(1)[:, None]).sqrt()
    n_honest = count.round().long()
    return HonestNeighbours(mean, spread, n_honest, edges.degrees - n_honest)
