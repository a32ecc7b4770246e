"""The loss-based rule of Li, Abbas and Koutsoukos (NeurIPS 2020), the heart of byzmtl."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from byzmtl.ops import branches_freely
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


@RULES.register("loss")
@dataclass
class LossBased(WeightRule):
    """Loss-based weights: score every received message on the receiver's own batch,

        r_lk <- (1 - nu) * r_lk + nu * l_k(psi_l),   r_lk(0) = r0,   for every l in N_k (k too),
        keep l iff r_lk <= r_kk                       (k always keeps itself),
        c_lk = (1 / r_lk) / sum over kept m of (1 / r_mk),   c_lk = 0 for the others.

    A message that cannot be scored (non-finite loss, or any NaN/Inf coordinate) counts as an
    infinite loss: its sender's accumulated score becomes +inf and it is filtered from then on.
    If the receiver's own score is +inf (or NaN), it keeps only itself: c_kk = 1. Scores that
    underflow to 0 are inverted as the smallest score whose inverses cannot overflow a sum
    (:func:`~byzmtl.rules.base.inverse`), so that kept scores of 0 share the weight equally.
    """

    nu: Forgetting = 0.1
    r0: InitialScore = 10.0
    needs_losses = True
    shared_settings = ("nu", "r0")

    def init_state(self, edges: Neighbourhoods, dtype: torch.dtype) -> RuleState:
        r = torch.full((edges.n_edges,), self.r0, dtype=dtype, device=edges.receivers.device)
        return RuleState(edges={"r": r})

    def affinities(self, x: RuleInputs, state: RuleState) -> tuple[Tensor, RuleState]:
        assert x.losses is not None, "the engine supplies losses to rules that need them"
        r = accumulate(state.edges["r"], x.losses, self.nu)
        own = r.index_select(0, x.edges.self_edges)
        if branches_freely(r) and own.max().item() < math.inf:  # no r_kk is +inf or NaN: the
            kept = r <= own.index_select(0, x.edges.receivers)  # same weights, fewer steps
            return torch.where(kept, inverse(r, x.edges), 0.0), RuleState(edges={"r": r})
        alone = ~(own < torch.inf)  # r_kk is +inf or NaN: k keeps only itself
        threshold = torch.where(alone, -torch.inf, own)
        kept = r <= threshold.index_select(0, x.edges.receivers)
        affinities = torch.where(kept, inverse(r, x.edges), 0.0)
        mine = torch.where(alone, 1.0, affinities.index_select(0, x.edges.self_edges))
        return affinities.index_copy_(0, x.edges.self_edges, mine), RuleState(edges={"r": r})
