"""Adaptive attacks against the loss rule: messages built to pass its filter.

The loss rule keeps sender l at receiver k when r_lk <= r_kk, both accumulated with the same
recursion r <- (1 - nu) r + nu * l_k(.) from the same r0. An attacker whose message m_bk has, in
every round, a loss on k's current batch no larger than k's own,

    l_k(m_bk) <= l_k(psi_k),

therefore keeps r_bk <= r_kk in every round (by induction, for any nu and r0), passes the filter
and receives a weight at least k's own. Using exactly that budget every round is what an
omniscient attacker that tracks r_kk and r_bk would do as well: a greedy attacker that spends its
whole slack keeps r_bk = r_kk, whose slack in the next round is again l_k(psi_k). The attacks
below stay ``margin`` under it, l_k(m_bk) <= (1 - margin) * l_k(psi_k), so that rounding in a
differently batched evaluation cannot tip them over. They need only ``AttackInputs.loss_of``.

Each attacker b pulls towards its own target T_b = value + U[0, spread)^d, drawn once (like the
``constant`` attack of the paper).

- ``adaptive`` (any model): anchor a_k = the honest message of N_k (psi_k included) of lowest
  loss on k's batch; the message is the point of the segment from a_k to T_b closest to T_b
  whose loss stays within the budget, m_bk = a_k + t* (T_b - a_k), found by bisection on t in
  [0, 1] (the loss being convex along the segment, the admissible t form an interval from 0).
  If even a_k is over budget (a_k = psi_k), it sends psi_k.
- ``null-space`` (its special case for linear regression): with rank-one data
  l_k(w) = (b_k - u_k^T w)^2, every direction v orthogonal to u_k leaves the loss unchanged, so
  m_bk = psi_k + push * v_k (plus a step of relative size ``margin`` down the loss) has the
  receiver's own loss however far it goes. v_k is the unit direction of T_b - psi_k projected
  orthogonally to the gradient g_k of l_k at psi_k (g_k is proportional to u_k), obtained by
  central differences from 2d + 1 evaluations of ``loss_of`` (exact for a quadratic loss): for
  models of at most ``max_dimension`` parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import torch
from annotated_types import Ge, Gt, Interval
from torch import Tensor

from byzmtl.attacks.base import (
    ATTACKS,
    Attack,
    AttackAssumptionError,
    AttackContext,
    AttackInputs,
)
from byzmtl.ops import row_dot


def targets(x: AttackInputs, value: float, spread: float) -> Tensor:
    """(B, d) the target T_b of each attacked edge's sender, drawn once per attacker."""
    memo = ("adaptive-target", value, spread, x.psi.shape[-1], x.psi.dtype)
    if memo not in x.context.cache:
        noise = x.uniform("attack-adaptive-target", x.context.sender_keys, x.psi.shape[-1], 0)
        x.context.cache[memo] = value + spread * noise
    return x.context.cache[memo]


@ATTACKS.register("adaptive")
@dataclass
class Adaptive(Attack):
    """Per receiver, the model closest to the attacker's target T_b on the segment from the
    lowest-loss honest message of N_k towards T_b whose loss on k's batch stays under
    (1 - margin) * l_k(psi_k): it passes the loss filter (module docstring).

    >>> import torch
    >>> from byzmtl.attacks.base import one_round
    >>> from byzmtl.graph import complete
    >>> from byzmtl.neighbourhoods import Neighbourhoods
    >>> edges = Neighbourhoods.from_graph(complete(3))
    >>> psi = torch.tensor([[1.0, 0.0], [0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    >>> u = torch.tensor([1.0, 0.0], dtype=torch.float64)
    >>> loss = lambda m: (3.0 - m @ u).square()  # every agent's sample: u^T w = 3
    >>> sent = one_round(Adaptive(), edges, psi, [1], loss_of=loss)  # to agents 0, 1, 2
    >>> [round(float(v), 3) for v in loss(sent[None])[0]]  # own losses: 4, 9 and 1
    [3.996, 8.991, 1.0]

    Agent 2 holds the best model of its neighbourhood: the attacker can only echo it.
    """

    value: float = 15.0
    spread: float = 1.0
    margin: Annotated[float, Interval(gt=0, lt=1)] = 1e-3
    steps: Annotated[int, Ge(1)] = 30
    trains: bool = True
    neighbourhood_only: ClassVar[bool] = True

    def anchors(self, x: AttackInputs) -> tuple[Tensor, Tensor]:
        """(R, B, d) lowest-loss honest message of each receiver's neighbourhood and its loss."""
        edges = x.context.edges
        index, slots = edges.padded
        rows = index[x.receivers]  # (B, D) edges into each receiver
        honest = slots[x.receivers] & ~x.context.byzantine[edges.senders[rows]]
        best = x.psi[:, x.receivers]
        best_loss = x.loss_of(best)
        for slot in range(rows.shape[1]):
            candidate = x.honest[:, rows[:, slot]]
            loss = x.loss_of(candidate).masked_fill(~honest[None, :, slot], torch.inf)
            better = loss < best_loss
            best = torch.where(better[..., None], candidate, best)
            best_loss = torch.where(better, loss, best_loss)
        return best, best_loss

    def messages(self, x: AttackInputs) -> Tensor:
        """(R, B, d): a_k + t* (T_b - a_k) with t* the largest admissible t (bisection)."""
        budget = (1.0 - self.margin) * x.loss_of(x.psi[:, x.receivers])
        anchor, anchor_loss = self.anchors(x)
        direction = targets(x, self.value, self.spread)[None] - anchor
        low = torch.zeros_like(budget)
        high = torch.ones_like(budget)
        reach = x.loss_of(anchor + direction) <= budget
        low = torch.where(reach, high, low)
        for _ in range(self.steps):
            middle = (low + high) / 2
            ok = x.loss_of(anchor + middle[..., None] * direction) <= budget
            low = torch.where(ok, middle, low)
            high = torch.where(ok, high, middle)
        feasible = (anchor_loss <= budget)[..., None]
        return torch.where(feasible, anchor + low[..., None] * direction, anchor)


@ATTACKS.register("null-space")
@dataclass
class NullSpace(Attack):
    """m_bk = psi_k + push * v_k - margin * l_k(psi_k) * g_k / ||g_k||^2, with v_k the unit
    direction of T_b - psi_k orthogonal to the gradient g_k of k's loss at psi_k (module
    docstring). On linear regression its loss is (1 - margin/2)^2 * l_k(psi_k).

    >>> import torch
    >>> from byzmtl.attacks.base import one_round
    >>> from byzmtl.graph import complete
    >>> from byzmtl.neighbourhoods import Neighbourhoods
    >>> edges = Neighbourhoods.from_graph(complete(2))
    >>> psi = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    >>> u, b = torch.tensor([1.0, 0.0], dtype=torch.float64), 3.0  # both agents see one sample
    >>> loss = lambda m: (b - m @ u).square()
    >>> sent = one_round(NullSpace(push=2.0, margin=1e-9), edges, psi, [1], loss_of=loss)
    >>> [[round(v, 6) for v in row] for row in sent.tolist()]  # moved along e2, towards T
    [[1.0, 2.0], [0.0, 2.0]]
    """

    push: Annotated[float, Gt(0)] = 1.0
    value: float = 15.0
    spread: float = 1.0
    margin: Annotated[float, Interval(gt=0, lt=1)] = 1e-3
    probe: Annotated[float, Gt(0)] = 1.0
    max_dimension: int = 64
    trains: bool = True
    neighbourhood_only: ClassVar[bool] = True

    def check(self, context: AttackContext, task: Any) -> None:
        dimension = int(task.init_models(1).shape[-1])
        if dimension > self.max_dimension:
            name = getattr(task, "name", type(task).__name__)
            raise AttackAssumptionError(
                f"null-space probes the loss 2d + 1 times per round; {name!r} has d={dimension}"
                f" parameters, more than max_dimension={self.max_dimension}"
            )

    def gradient(self, x: AttackInputs, own: Tensor) -> Tensor:
        """(R, B, d) central-difference gradient of each receiver's loss at ``own``."""
        columns = []
        for j in range(own.shape[-1]):
            step = torch.zeros_like(own)
            step[..., j] = self.probe
            columns.append((x.loss_of(own + step) - x.loss_of(own - step)) / (2 * self.probe))
        return torch.stack(columns, -1)

    def messages(self, x: AttackInputs) -> Tensor:
        """(R, B, d): the receiver's own model pushed along its loss's null space."""
        own = x.psi[:, x.receivers]
        loss = x.loss_of(own)
        g = self.gradient(x, own)
        g_squared = row_dot(g, g)[..., None]
        safe = torch.where(g_squared > 0, g_squared, 1.0)
        direction = targets(x, self.value, self.spread)[None] - own
        across = direction - (row_dot(direction, g)[..., None] / safe) * g
        length = row_dot(across, across).sqrt()[..., None]
        v = torch.where(length > 0, across / torch.where(length > 0, length, 1.0), 0.0)
        descent = torch.where(g_squared > 0, self.margin * loss[..., None] * g / safe, 0.0)
        return own + self.push * v - descent
