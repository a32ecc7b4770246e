"""Two-stage selection: a distance shortlist, then a performance check on the receiver's data
(MOZI, Guo et al. 2020; UBAR, Guo et al. 2021)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from annotated_types import Interval
from torch import Tensor

from byzmtl.ops import squared_norm
from byzmtl.rules.base import RULES, RuleInputs, RuleState, WeightRule
from byzmtl.rules.padded import block, rank_slots


@RULES.register("ubar")
@dataclass
class TwoStage(WeightRule):
    """UBAR / MOZI two-stage selection, receiver k itself included:

    1. distance shortlist: the s_k = ceil(rho * |N_k|) finite messages closest to psi_k,
       S_k = the s_k smallest ||m_lk - psi_k|| (k itself is at distance 0, so it is in);
    2. performance check on k's current batch: R_k = {l in S_k : l_k(m_lk) <= l_k(psi_k)};
    3. w_k = (1 / |R_k|) * sum over l in R_k of m_lk.

    UBAR mixes alpha * psi_k + (1 - alpha) * mean(R_k minus k); averaging k with the others is
    the choice alpha = 1 / |R_k|. ``rho`` is the fraction of the neighbourhood assumed honest
    (0 < rho <= 1); the shortlist is never empty, so no graph assumption is needed. Non-finite
    messages are at infinite distance and have infinite loss: never kept. Distances are ranked
    on the neighbourhood scaled by a power of two where they could overflow
    (:meth:`~byzmtl.rules.padded.Block.scaled_for_distances`), so huge messages rank by size.

    >>> import torch
    >>> from byzmtl.graph import complete
    >>> from byzmtl.neighbourhoods import Neighbourhoods
    >>> from byzmtl.rules.base import RuleInputs
    >>> edges = Neighbourhoods.from_graph(complete(3))
    >>> psi = torch.tensor([[0.0], [1.0], [5.0]], dtype=torch.float64)
    >>> losses = (psi[edges.senders, 0] - 1.0).square()  # every agent's data says 1
    >>> x = RuleInputs.sent(edges, psi, losses=losses)
    >>> TwoStage(rho=0.5).step(x, {})[0].models.flatten().tolist()
    [0.5, 1.0, 3.0]
    """

    rho: Annotated[float, Interval(gt=0, le=1)] = 0.5
    needs_losses = True

    def affinities(self, x: RuleInputs, state: RuleState) -> tuple[Tensor, RuleState]:
        assert x.losses is not None, "the engine supplies losses to rules that need them"
        padded, scale = block(x).scaled_for_distances(x.psi)
        index, _ = x.edges.padded
        own = (x.psi * scale[:, None])[:, None, :]
        distance = squared_norm(padded.values - own)
        shortlist = (x.edges.degrees * self.rho - 1e-9).ceil().long()
        shortlisted = rank_slots(distance, padded.valid) < shortlist[:, None]
        own_loss = x.losses.index_select(0, x.edges.self_edges)
        better = x.losses[index] <= own_loss[:, None]
        kept = (shortlisted & better & padded.valid) | (index == x.edges.self_edges[:, None])
        return padded.to_edges(kept.to(x.messages.dtype)), state
