"""The geometric median of each neighbourhood, by the smoothed Weiszfeld algorithm (the robust
aggregation of RFA, Pillutla, Kakade and Harchaoui, IEEE TSP 2022), in decentralised form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from annotated_types import Ge, Gt
from torch import Tensor

from byzmtl.rules.base import (
    RULES,
    Neighbourhoods,
    RuleInputs,
    RuleState,
    WeightRule,
    power_of_two_below,
)
from byzmtl.rules.coordinatewise import coordinate_median
from byzmtl.rules.padded import Block, block, check_degree


def weiszfeld_weights(x: Block, z: Tensor, smoothing: Tensor) -> Tensor:
    """(N, D) beta_i = 1 / max(smoothing_k, ||z_k - m_i||) on finite messages, 0 elsewhere,
    ``smoothing`` (N, 1); each row multiplied by the power of two that brings its largest beta
    below 1, so that sums of beta_i * m_i cannot overflow (their ratios are unchanged)."""
    distance = torch.linalg.vector_norm(x.values - z[:, None, :], dim=-1)
    beta = torch.where(x.valid, torch.maximum(distance, smoothing).reciprocal_(), 0.0)
    return beta * power_of_two_below(beta.amax(1, keepdim=True), 1.0)


@RULES.register("geometric-median")
@dataclass
class GeometricMedian(WeightRule):
    """Geometric median of the neighbourhood (itself included):

        w_k ~ argmin over z of sum over l in N_k of ||z - m_lk||,

    approximated by the smoothed Weiszfeld iteration started at the coordinate-wise median,

        z <- sum_l beta_l m_lk / sum_l beta_l,    beta_l = 1 / max(smoothing, ||z - m_lk||),

    run ``iterations`` times; the last step is returned as edge weights c_lk = beta_l / sum beta,
    so the engine forms w_k = sum_l c_lk m_lk. The breakdown point is 1/2: ``check`` demands
    |N_k| > 2f for the ``f`` Byzantine neighbours to tolerate. Non-finite messages get beta = 0.
    Where distances could overflow, the iteration runs on the neighbourhood scaled by a power
    of two, smoothing included (:meth:`~byzmtl.rules.padded.Block.scaled_for_distances`): the
    iteration is scale-equivariant, so the weights are those of the unscaled one.

    >>> import torch
    >>> from byzmtl.graph import complete
    >>> from byzmtl.neighbourhoods import Neighbourhoods
    >>> from byzmtl.rules.base import RuleInputs
    >>> edges = Neighbourhoods.from_graph(complete(3))
    >>> psi = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    >>> w = GeometricMedian(f=1, iterations=200).step(RuleInputs.sent(edges, psi), {})[0].models
    >>> [round(v, 4) for v in w[0].tolist()]  # the Fermat point of the triangle
    [0.2113, 0.2113]
    """

    f: Annotated[int, Ge(0)] = 1
    iterations: Annotated[int, Ge(1)] = 8
    smoothing: Annotated[float, Gt(0)] = 1e-8

    def check(self, edges: Neighbourhoods) -> None:
        check_degree(
            edges, 2 * self.f + 1, "geometric-median", f"an honest majority against f={self.f}"
        )

    def affinities(self, x: RuleInputs, state: RuleState) -> tuple[Tensor, RuleState]:
        padded, scale = block(x).scaled_for_distances(x.psi)
        tiny = torch.finfo(scale.dtype).tiny
        smoothing = (scale * self.smoothing).clamp_min_(tiny)[:, None]
        z = coordinate_median(padded)
        for _ in range(self.iterations - 1):
            beta = weiszfeld_weights(padded, z, smoothing)
            z = (beta[..., None] * padded.values).sum(1) / beta.sum(1, keepdim=True)
        beta = weiszfeld_weights(padded, z, smoothing)
        return padded.to_edges(beta), state
