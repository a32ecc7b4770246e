"""Self-centred clipping (ClippedGossip, He, Karimireddy and Jaggi, 2022), with a fixed radius."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from annotated_types import Gt
from torch import Tensor

from byzmtl.ops import branches_freely
from byzmtl.rules.base import RULES, RuleInputs, RuleState, WeightRule, power_of_two_below


def clip_factors(x: RuleInputs, tau: Tensor | float) -> Tensor:
    """(E,) s_lk = min(1, tau / ||m_lk - psi_k||): the factor that clips edge (k, l)'s difference
    to the receiver's own model at radius tau (per receiver when ``tau`` is (N,)); 0 for
    non-finite messages, 1 on self-loops. Where ||m_lk - psi_k||^2 overflows, the distance is
    computed on m_lk and psi_k scaled by a power of two (:func:`scaled_factors`)."""
    distance = x.squared_distances(x.psi).sqrt()
    radius = tau if isinstance(tau, float) else tau.index_select(0, x.edges.receivers)
    factors = torch.where(distance > radius, radius / distance, 1.0)
    if not branches_freely(distance):  # every edge's scaled factor, kept where it overflowed
        every = torch.arange(x.edges.n_edges, device=distance.device)
        scaled = scaled_factors(x, every, radius)
        factors = torch.where(distance == torch.inf, scaled, factors)
    elif bool(distance.max() == torch.inf):
        overflow = torch.nonzero(distance == torch.inf).flatten()
        chosen = radius if isinstance(radius, float) else radius.index_select(0, overflow)
        factors.index_copy_(0, overflow, scaled_factors(x, overflow, chosen))
    return factors if x.all_finite else factors.masked_fill(~x.finite, 0.0)


def scaled_factors(x: RuleInputs, edges: Tensor, radius: Tensor | float) -> Tensor:
    """min(1, radius / ||m_lk - psi_k||) on the given edges, as min(1, radius * s / ||m_lk * s -
    psi_k * s||) with s the power of two that brings both below 1 in magnitude: the distance
    cannot overflow."""
    messages = x.messages.index_select(0, edges)
    own = x.psi.index_select(0, x.edges.receivers.index_select(0, edges))
    largest = torch.maximum(messages.abs().amax(1), own.abs().amax(1))
    scale = power_of_two_below(largest, 1.0)[:, None]
    distance = torch.linalg.vector_norm(messages * scale - own * scale, dim=1)
    return (radius * scale[:, 0] / distance).clamp_max_(1.0)


@RULES.register("clipped-gossip")
@dataclass
class ClippedGossip(WeightRule):
    """Self-centred clipping: every finite neighbour's difference to the receiver's own model is
    clipped at radius tau, then averaged uniformly over the n_k finite messages of N_k:

        w_k = psi_k + (1 / n_k) * sum over l in N_k of clip(m_lk - psi_k, tau),
        clip(v, tau) = v * min(1, tau / ||v||).

    This is the weight rule c_lk = s_lk / n_k for l != k and c_kk = 1 - sum over l != k of c_lk,
    with s_lk = min(1, tau / ||m_lk - psi_k||), so the engine combines it with the others. A
    receiver never moves further than tau * (n_k - 1) / n_k from psi_k (fewer than tau times its
    neighbour count). Non-finite messages are left out (s_lk = 0). No assumption on the graph.

    >>> import torch
    >>> from byzmtl.graph import complete
    >>> from byzmtl.neighbourhoods import Neighbourhoods
    >>> from byzmtl.rules.base import RuleInputs
    >>> edges = Neighbourhoods.from_graph(complete(2))
    >>> psi = torch.tensor([[0.0], [10.0]], dtype=torch.float64)
    >>> ClippedGossip(tau=1.0).step(RuleInputs.sent(edges, psi), {})[0].models.flatten().tolist()
    [0.5, 9.5]
    """

    tau: Annotated[float, Gt(0)] = 1.0

    def affinities(self, x: RuleInputs, state: RuleState) -> tuple[Tensor, RuleState]:
        factors = clip_factors(x, float(self.tau))
        others = torch.where(x.edges.is_self, 0.0, factors)
        count = (
            x.edges.degrees.to(factors.dtype)
            if x.all_finite
            else x.edges.sum_per_receiver(x.finite.to(factors.dtype))
        )
        own = count - x.edges.sum_per_receiver(others)
        return torch.where(x.edges.is_self, own.index_select(0, x.edges.receivers), others), state
