"""The hardened loss rule: the paper's loss filter, then self-centred clipping of what it accepts.

Why the loss rule needs hardening. Its filter compares losses on the receiver's own data, which
only see the directions that data excites. In target localization every observation is rank one,
l_k(w) = (b_k - u_k^T w)^2, so a message psi_k + v with u_k^T v = 0 has exactly the receiver's loss:
it passes the filter with a weight as large as the receiver's own, however far v reaches (the
``null-space`` attack). Normal agents then keep a low loss while their estimates drift far from
their targets: the paper's guarantee is about loss, and loss cannot see that drift.

The fix bounds what any accepted message can do, on the scale of the receiver's own learning:
each accepted difference m_lk - psi_k is clipped at tau_k, a fixed fraction kappa of the root mean
square of the receiver's own recent steps ||psi_k - w_k(i-1)||. Honest neighbours of the same task
differ from psi_k by about that much once learning has settled, so they still help; an attacker,
whatever it sends and whether or not it passes the filter, moves k by at most c_bk * tau_k per
round, less than kappa times k's own step. A filter on the receiver's past samples would not do:
in target localization the regressors of one agent all point nearly the same way, so past data
cannot see the drift either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from annotated_types import Gt
from torch import Tensor

from byzmtl.ops import squared_norm
from byzmtl.rules.base import RULES, Neighbourhoods, RuleInputs, RuleState, accumulate
from byzmtl.rules.clipping import clip_factors
from byzmtl.rules.loss import LossBased


@RULES.register("hardened-loss")
@dataclass
class HardenedLoss(LossBased):
    """The loss rule with self-centred clipping of the accepted messages:

        r_lk <- (1 - nu) r_lk + nu * l_k(m_lk),  keep l iff r_lk <= r_kk,
        c_lk = (1 / r_lk) / sum over kept m of (1 / r_mk)              (the loss rule's weights),
        s_k  <- (1 - nu) s_k + nu * ||psi_k - w_k(i-1)||^2   on rounds where k takes a step,
        n_k  <- n_k + 1                                       on those rounds,  s_k(0) = n_k(0) = 0,
        tau_k = kappa * sqrt(s_k / (1 - (1 - nu)^n_k))       (bias-corrected mean own step),
        w_k  = psi_k + sum over l in N_k of c_lk * clip(m_lk - psi_k, tau_k),
        clip(v, tau) = v * min(1, tau / ||v||),

    so that ||w_k - psi_k|| <= (1 - c_kk) * tau_k: no accepted message moves the receiver by more
    than kappa times the root mean square of its own recent steps (module docstring); agents
    that step only now and then (the paper's "less data" schedules) keep the scale of the steps
    they take, and an agent that has not stepped yet keeps its own model. As a
    weight rule: a_lk = c_lk * s_lk for l != k and a_kk = c_kk + sum over l != k of
    c_lk * (1 - s_lk), with s_lk = min(1, tau_k / ||m_lk - psi_k||). Messages that cannot be
    scored are filtered as in the loss rule. A step whose squared norm overflows is not taken
    into s_k (it would make tau_k, and every clip, infinite from then on). ``kappa`` = 0.5 by
    default.

    >>> import torch
    >>> from byzmtl.graph import complete
    >>> from byzmtl.neighbourhoods import Neighbourhoods
    >>> from byzmtl.rules.base import RuleInputs
    >>> edges = Neighbourhoods.from_graph(complete(2))
    >>> before = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    >>> psi = torch.tensor([[0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)  # both stepped by 1
    >>> losses = torch.ones(4, dtype=torch.float64)  # equal losses: both accepted, equal weights
    >>> x = RuleInputs.sent(edges, psi, before, losses)
    >>> rule = HardenedLoss(kappa=0.5)
    >>> rule.step(x, rule.init_state(edges, torch.float64))[0].models.tolist()
    [[0.25, 1.0], [0.75, 1.0]]
    """

    kappa: Annotated[float, Gt(0)] = 0.5

    def init_state(self, edges: Neighbourhoods, dtype: torch.dtype) -> RuleState:
        scores = super().init_state(edges, dtype)
        zeros = torch.zeros(edges.n_agents, dtype=dtype, device=edges.receivers.device)
        return RuleState(edges=scores.edges, agents={"s": zeros, "n": zeros.clone()})

    def affinities(self, x: RuleInputs, state: RuleState) -> tuple[Tensor, RuleState]:
        inverse, scores = super().affinities(x, state)
        weights = x.edges.normalise(inverse)
        step = squared_norm(x.psi - x.previous)
        stepped = (step > 0) & (step < torch.inf)  # a step whose square overflows is no scale
        s = torch.where(stepped, accumulate(state.agents["s"], step, self.nu), state.agents["s"])
        n = state.agents["n"] + stepped
        tau = self.kappa * (s / (1.0 - (1.0 - self.nu) ** n.clamp_min(1.0))).sqrt()
        clipped = weights * clip_factors(x, tau)
        others = torch.where(x.edges.is_self, 0.0, clipped)
        own = x.edges.sum_per_receiver(weights - others).index_select(0, x.edges.receivers)
        new = RuleState(edges=scores.edges, agents={"s": s, "n": n})
        return torch.where(x.edges.is_self, own, others), new
