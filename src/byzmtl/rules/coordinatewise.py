"""Coordinate-wise robust aggregators: median and trimmed mean, in decentralised form.

Both are L-estimators: receiver k sorts, coordinate by coordinate, the n_k finite messages of its
neighbourhood (itself included) and averages them with weights that depend on rank only,

    w_k[j] = sum over ranks t of a_t(n_k) * m_(t),k[j],    m_(0),k[j] <= ... <= m_(n_k - 1),k[j],

so the two rules share one vectorised implementation. A sender's weight on an edge (recorded for
the diagnostics) is the share of coordinates, weighted by a_t, that its message supplied:
c_lk = (1/d) * sum over j of a_(rank of m_lk[j])(n_k); these weights sum to one per receiver.
The sums are of the terms a_t * m_(t), never of the values before dividing, so they cannot
overflow (rounding past the largest float is clamped back: :func:`~byzmtl.ops.within_range`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from annotated_types import Ge
from torch import Tensor

from byzmtl.ops import within_range
from byzmtl.rules.base import (
    RULES,
    Combination,
    Neighbourhoods,
    Rule,
    RuleInputs,
    RuleState,
)
from byzmtl.rules.padded import Block, block, check_degree


def rank_average(x: Block, rank_weights: Tensor) -> tuple[Tensor, Tensor]:
    """sum over ranks t of a_t * m_(t) per receiver and coordinate, and the (N, D) weight of each
    slot averaged over coordinates. ``rank_weights`` (N, D): a_t, zero for t >= n_k."""
    values = torch.where(x.valid[:, None, :], x.values.transpose(1, 2), torch.inf)  # (N, d, D)
    ordered, order = values.sort(dim=2, stable=True)
    weights = rank_weights[:, None, :]
    models = within_range(torch.where(weights > 0, ordered, 0.0).mul_(weights).sum(2))
    per_coordinate = torch.zeros_like(ordered).scatter_(2, order, weights.expand_as(ordered))
    return models, per_coordinate.mean(1)


def median_rank_weights(count: Tensor, width: int, dtype: torch.dtype) -> Tensor:
    """(N, D) rank weights of the median of n_k values: 1 on rank (n_k - 1)/2 when n_k is odd,
    1/2 on ranks n_k/2 - 1 and n_k/2 when it is even (nothing when n_k = 0)."""
    ranks = torch.arange(width, device=count.device)[None, :]
    low, high = ((count - 1) // 2)[:, None], (count // 2)[:, None]
    halves = (ranks == low).to(dtype) + (ranks == high).to(dtype)
    return 0.5 * halves * (count > 0)[:, None]


def coordinate_median(x: Block) -> Tensor:
    """(N, d) coordinate-wise median of every receiver's finite messages."""
    return rank_average(x, median_rank_weights(x.count, x.values.shape[1], x.values.dtype))[0]


@RULES.register("median")
@dataclass
class Median(Rule):
    """Coordinate-wise median of the neighbourhood (itself included):

        w_k[j] = median over l in N_k of m_lk[j]     (mean of the two middle values if |N_k| even).

    Stays within the range of the honest values of each coordinate whenever fewer than half of
    the finite messages are Byzantine. ``f`` is the number of Byzantine neighbours the rule is
    meant to tolerate; ``check`` demands |N_k| > 2f (an honest majority is possible). Non-finite
    messages are left out (see :mod:`byzmtl.rules.padded`).

    >>> import torch
    >>> from byzmtl.graph import complete
    >>> from byzmtl.neighbourhoods import Neighbourhoods
    >>> from byzmtl.rules.base import RuleInputs
    >>> edges = Neighbourhoods.from_graph(complete(3))
    >>> psi = torch.tensor([[0.0], [1.0], [9.0]], dtype=torch.float64)
    >>> x = RuleInputs.sent(edges, psi)
    >>> Median(f=1).step(x, {})[0].models.flatten().tolist()
    [1.0, 1.0, 1.0]
    """

    f: Annotated[int, Ge(0)] = 1

    def check(self, edges: Neighbourhoods) -> None:
        check_degree(edges, 2 * self.f + 1, "median", f"an honest majority against f={self.f}")

    def step(self, x: RuleInputs, state: RuleState) -> tuple[Combination, RuleState]:
        padded = block(x)
        weights = median_rank_weights(padded.count, padded.values.shape[1], x.messages.dtype)
        models, per_slot = rank_average(padded, weights)
        return Combination(models, padded.to_edges(per_slot)), state


@RULES.register("trimmed-mean")
@dataclass
class TrimmedMean(Rule):
    """Coordinate-wise trimmed mean (the screening of BRIDGE, Yang and Bajwa 2019): per
    coordinate, drop the b largest and the b smallest values of the neighbourhood (itself
    included) and average the rest,

        w_k[j] = 1 / (|N_k| - 2b) * sum over t = b .. |N_k| - b - 1 of m_(t),k[j].

    Needs |N_k| > 2b, checked for every receiver. With m non-finite messages at k, they are left
    out and b - m values (at least 0) are trimmed per side from the others.

    >>> import torch
    >>> from byzmtl.graph import complete
    >>> from byzmtl.neighbourhoods import Neighbourhoods
    >>> from byzmtl.rules.base import RuleInputs
    >>> edges = Neighbourhoods.from_graph(complete(4))
    >>> psi = torch.tensor([[0.0], [1.0], [2.0], [100.0]], dtype=torch.float64)
    >>> x = RuleInputs.sent(edges, psi)
    >>> TrimmedMean(b=1).step(x, {})[0].models.flatten().tolist()
    [1.5, 1.5, 1.5, 1.5]
    """

    b: Annotated[int, Ge(0)] = 2

    def check(self, edges: Neighbourhoods) -> None:
        check_degree(edges, 2 * self.b + 1, "trimmed-mean", f"trimming b={self.b} per side")

    def step(self, x: RuleInputs, state: RuleState) -> tuple[Combination, RuleState]:
        padded = block(x)
        trim = padded.tolerated(self.b)[:, None]
        count = padded.count[:, None]
        ranks = torch.arange(padded.values.shape[1], device=count.device)[None, :]
        kept = (ranks >= trim) & (ranks < count - trim)
        dtype = x.messages.dtype
        weights = kept.to(dtype) / (count - 2 * trim).clamp_min(1).to(dtype)
        models, per_slot = rank_average(padded, weights)
        return Combination(models, padded.to_edges(per_slot)), state
