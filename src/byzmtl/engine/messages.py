"""What the receivers of one shard hear in one round: m_lk = psi_l, except on the edges whose
sender is Byzantine, where it is the attack's message. The per-edge messages are built only when
a rule reads them one by one; squared distances come from all pairs at once where cheaper."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from byzmtl.engine.shards import Shard
from byzmtl.ops import all_squared_distances, squared_norm


class ShardMessages:
    """The messages received on one shard's edges in one round, for every replica, built only
    when a rule needs them.

    On a dense shard (see ``Shard.dense``) of a model in single precision, the squared distances
    to per-receiver targets come from all pairs at once
    (:func:`byzmtl.ops.all_squared_distances`) without building the messages."""

    def __init__(
        self, psi: Tensor, shard: Shard, attack_values: Tensor | None, buffer: Tensor
    ) -> None:
        self.psi, self.shard, self.attack_values, self.buffer = psi, shard, attack_values, buffer
        self._gathered: Tensor | None = None

    def tensor(self) -> Tensor:
        """(R, E_s, d), gathered on first use into ``buffer`` (valid this round)."""
        if self._gathered is None:
            senders = self.shard.edges.senders
            gathered = torch.index_select(self.psi, 1, senders, out=self.buffer)
            if self.attack_values is not None:
                gathered.index_copy_(1, self.shard.attacked, self.attack_values)
            self._gathered = gathered
        return self._gathered

    def replica(self, r: int) -> ReplicaMessages:
        return ReplicaMessages(self, r)

    def squared_distances(self, r: int, targets: Tensor) -> Tensor:
        """(E_s,) ||m_lk - targets_k||^2 in replica r, ``targets`` (N_s, d)."""
        edges = self.shard.edges
        if self._gathered is not None or not self.shard.dense or targets.dtype == torch.float64:
            return squared_norm(self.tensor()[r] - targets.index_select(0, edges.receivers))
        pairs = all_squared_distances(targets, self.psi[r])
        first = self.shard.agents.start * self.shard.totals[1]
        out = pairs.flatten().index_select(0, self.shard.pairs - first)
        if self.attack_values is not None:
            attacked = self.shard.attacked
            own = targets.index_select(0, edges.receivers.index_select(0, attacked))
            out.index_copy_(0, attacked, squared_norm(self.attack_values[r] - own))
        return out


@dataclass(frozen=True, eq=False)
class ReplicaMessages:
    """One replica's row of a :class:`ShardMessages` (what ``RuleInputs.received`` holds)."""

    messages: ShardMessages
    r: int

    def tensor(self) -> Tensor:
        return self.messages.tensor()[self.r]

    def squared_distances(self, targets: Tensor) -> Tensor:
        return self.messages.squared_distances(self.r, targets)


class MessageBuffers:
    """One (R, E_s, d) buffer per shard that messages are gathered into when a rule needs them,
    all views of one allocation reused every round (large fresh tensors cost page faults)."""

    def __init__(self, shards: list[Shard]) -> None:
        self.shards = shards
        self._views: dict[int, Tensor] = {}

    def of(self, psi: Tensor, shard: Shard) -> Tensor:
        out = self._views.get(id(shard))
        if out is None or out.shape[2] != psi.shape[2] or out.dtype != psi.dtype:
            largest = max(s.n_edges for s in self.shards)
            buffer = psi.new_empty(psi.shape[0] * largest * psi.shape[2])
            self._views = {
                id(s): buffer[: psi.shape[0] * s.n_edges * psi.shape[2]].view(
                    psi.shape[0], s.n_edges, psi.shape[2]
                )
                for s in self.shards
            }
            out = self._views[id(shard)]
        return out
