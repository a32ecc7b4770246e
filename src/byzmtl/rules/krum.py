"""Krum and Multi-Krum (Blanchard et al., NeurIPS 2017) in decentralised form.

Receiver k scores each finite message m_i of its neighbourhood (itself included; n_k messages,
f_k the Byzantine senders tolerated among them, see :mod:`byzmtl.rules.padded`) by the squared
distances to its n_k - f_k - 2 closest other messages,

    s_i = sum over the n_k - f_k - 2 messages j != i closest to m_i of ||m_i - m_j||^2,

then Krum keeps the message of lowest score and Multi-Krum averages the M lowest. Both are weight
rules (weight 1 on the kept edges, then normalised), so the engine combines them with the others.
Ties go to the lower edge index (the lower sender id). Scores are computed on the neighbourhood
scaled by a power of two where its distances could overflow
(:meth:`~byzmtl.rules.padded.Block.scaled_for_distances`): they rank as the exact scores do and
every finite message gets a finite score, so only finite messages are ever kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from annotated_types import Ge
from torch import Tensor

from byzmtl.rules.base import RULES, Neighbourhoods, RuleInputs, RuleState, WeightRule
from byzmtl.rules.padded import Block, block, check_degree, rank_slots


def krum_scores(x: Block, f: int) -> Tensor:
    """(N, D) Krum score of every slot; +inf for slots without a finite message. On a block
    from :meth:`~byzmtl.rules.padded.Block.scaled_for_distances` every other score is finite."""
    width = x.values.shape[1]
    distances = torch.cdist(x.values, x.values, compute_mode="donot_use_mm_for_euclid_dist")
    others = ~torch.eye(width, dtype=torch.bool, device=x.valid.device)
    pairs = x.valid[:, :, None] & x.valid[:, None, :] & others
    ordered = torch.where(pairs, distances.square(), torch.inf).sort(dim=2).values
    closest = (x.count - x.tolerated(f) - 2).clamp_min(0)
    ranks = torch.arange(width, device=closest.device)
    used = ranks[None, None, :] < closest[:, None, None]
    scores = torch.where(used, ordered, 0.0).sum(2)
    return torch.where(x.valid, scores, torch.inf)


@RULES.register("krum")
@dataclass
class Krum(WeightRule):
    """Krum: w_k = the message of N_k (itself included) of lowest Krum score s_i (module
    docstring). Tolerates f Byzantine neighbours when |N_k| > 2f + 2, checked for every receiver.

    >>> import torch
    >>> from byzmtl.graph import complete
    >>> from byzmtl.neighbourhoods import Neighbourhoods
    >>> from byzmtl.rules.base import RuleInputs
    >>> edges = Neighbourhoods.from_graph(complete(5))
    >>> psi = torch.tensor([[0.0], [0.1], [0.2], [0.4], [50.0]], dtype=torch.float64)
    >>> Krum(f=1).step(RuleInputs.sent(edges, psi), {})[0].models.flatten().tolist()
    [0.1, 0.1, 0.1, 0.1, 0.1]
    """

    f: Annotated[int, Ge(0)] = 1

    def check(self, edges: Neighbourhoods) -> None:
        check_degree(edges, 2 * self.f + 3, "krum", f"|N_k| > 2f + 2 with f={self.f}")

    def affinities(self, x: RuleInputs, state: RuleState) -> tuple[Tensor, RuleState]:
        padded, _ = block(x).scaled_for_distances(x.psi)
        chosen = krum_scores(padded, self.f).argmin(1)
        one_hot = torch.zeros(padded.valid.shape, dtype=x.messages.dtype, device=chosen.device)
        one_hot.scatter_(1, chosen[:, None], 1.0)
        return padded.to_edges(one_hot * padded.valid), state


@RULES.register("multi-krum")
@dataclass
class MultiKrum(WeightRule):
    """Multi-Krum: w_k = the average of the M_k messages of N_k of lowest Krum score, with
    M_k = n_k - f_k by default or min(m, n_k - f_k) when ``m`` is given. Needs |N_k| > 2f + 2 and
    |N_k| >= m + f, checked for every receiver.

    >>> import torch
    >>> from byzmtl.graph import complete
    >>> from byzmtl.neighbourhoods import Neighbourhoods
    >>> from byzmtl.rules.base import RuleInputs
    >>> edges = Neighbourhoods.from_graph(complete(5))
    >>> psi = torch.tensor([[0.0], [0.1], [0.2], [0.4], [50.0]], dtype=torch.float64)
    >>> out = MultiKrum(f=1).step(RuleInputs.sent(edges, psi), {})[0].models.flatten()
    >>> [round(v, 6) for v in out.tolist()]
    [0.175, 0.175, 0.175, 0.175, 0.175]
    """

    f: Annotated[int, Ge(0)] = 1
    m: Annotated[int, Ge(1)] | None = None

    def check(self, edges: Neighbourhoods) -> None:
        check_degree(edges, 2 * self.f + 3, "multi-krum", f"|N_k| > 2f + 2 with f={self.f}")
        if self.m is not None:
            check_degree(
                edges, self.m + self.f, "multi-krum", f"averaging m={self.m} with f={self.f}"
            )

    def affinities(self, x: RuleInputs, state: RuleState) -> tuple[Tensor, RuleState]:
        padded, _ = block(x).scaled_for_distances(x.psi)
        scores = krum_scores(padded, self.f)
        kept = padded.count - padded.tolerated(self.f)
        if self.m is not None:
            kept = kept.clamp_max(self.m)
        selected = rank_slots(scores, padded.valid) < kept[:, None]
        return padded.to_edges((selected & padded.valid).to(x.messages.dtype)), state
