"""The paper's baseline rules: no cooperation, plain average, distance-based weights.

What each does with a message that cannot be scored (any NaN or Inf coordinate): ``none`` never
looks at messages; ``average`` drops it and averages the finite ones; ``distance`` gives it an
infinite accumulated distance, hence weight 0 from then on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from byzmtl.names import NO_COOPERATION
from byzmtl.rules.base import (
    RULES,
    Forgetting,
    InitialScore,
    Neighbourhoods,
    RuleInputs,
    RuleState,
    WeightRule,
    accumulate,
    inverse,
)


@RULES.register(NO_COOPERATION)
@dataclass
class NoCooperation(WeightRule):
    """No cooperation: c_kk = 1, so w_k = psi_k (every agent learns alone)."""

    def affinities(self, x: RuleInputs, state: RuleState) -> tuple[Tensor, RuleState]:
        return x.edges.self_weights(x.psi.dtype), state


@RULES.register("average")
@dataclass
class Average(WeightRule):
    """Uniform weights over the neighbourhood: c_lk = 1 / |N_k| (Byzantine senders included;
    non-finite messages are dropped and the remaining weights renormalised)."""

    def affinities(self, x: RuleInputs, state: RuleState) -> tuple[Tensor, RuleState]:
        if x.all_finite:
            return x.psi.new_ones(x.edges.n_edges), state
        return x.finite.to(x.psi.dtype), state


@RULES.register("distance")
@dataclass
class Distance(WeightRule):
    """Distance-based weights (Chen, Richard and Sayed, IEEE TSP 2015):

    g_lk <- (1 - nu) * g_lk + nu * ||psi_l - w_k(i-1)||^2,   g_lk(0) = r0,
    c_lk = (1 / g_lk) / sum over m in N_k of (1 / g_mk)     (no filter).

    A distance that overflows is +inf, as is a non-finite message's: 1 / g_lk = 0 from then on
    (a receiver whose every g_lk is +inf keeps itself, c_kk = 1). Distances that underflow to 0
    are inverted as the smallest g whose inverses cannot overflow a sum
    (:func:`~byzmtl.rules.base.inverse`).
    """

    nu: Forgetting = 0.1
    r0: InitialScore = 10.0
    shared_settings = ("nu", "r0")

    def init_state(self, edges: Neighbourhoods, dtype: torch.dtype) -> RuleState:
        g = torch.full((edges.n_edges,), self.r0, dtype=dtype, device=edges.receivers.device)
        return RuleState(edges={"g": g})

    def affinities(self, x: RuleInputs, state: RuleState) -> tuple[Tensor, RuleState]:
        distance = x.squared_distances(x.previous)
        if not x.all_finite:
            distance = distance.masked_fill(~x.finite, torch.inf)
        g = accumulate(state.edges["g"], distance, self.nu)
        return inverse(g, x.edges), RuleState(edges={"g": g})
