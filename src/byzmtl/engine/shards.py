"""Shards: contiguous ranges of receivers, with all their incoming edges, that the engine weighs
and combines as a unit, so that a large network's temporaries stay in cache. Cutting the
receivers into shards changes no result."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

from byzmtl.neighbourhoods import Neighbourhoods

SHARD_EDGES = 1 << 18  # edges x replicas per shard: a shard's temporaries stay in cache


@dataclass(frozen=True, eq=False)
class Shard:
    """A contiguous range of receivers with all their incoming edges (edges are sorted by
    receiver), combined as a unit. ``edges`` numbers receivers locally (0 = the first agent of
    the shard); senders keep their global ids."""

    agents: slice  # the receivers a..b-1
    edge_range: slice  # their edges
    edges: Neighbourhoods
    receivers: Tensor  # (E_s,) global receiver of each edge (for the task's batches)
    attacked: Tensor  # positions, within the shard, of edges whose sender is Byzantine
    attacked_rows: Tensor  # their rows in the round's tensor of attack messages
    totals: tuple[int, int]  # (edges, agents) of the whole graph
    may_be_dense: bool = True  # False: always combined as sparse (a partitioned rank's shards)

    @property
    def n_edges(self) -> int:
        return self.edges.n_edges

    @property
    def whole(self) -> bool:
        """The shard is the whole graph."""
        return self.n_edges == self.totals[0]

    @cached_property
    def dense(self) -> bool:
        """At least half of all (receiver, sender) pairs of the shard are edges: then a dense
        (receivers, agents) matrix, or work on all pairs, costs at most twice the edges."""
        return self.may_be_dense and self.edges.n_agents * self.totals[1] <= 2 * self.n_edges

    @cached_property
    def attacked_receivers(self) -> Tensor:
        """(B_s,) global receiver of each attacked edge of the shard."""
        return self.receivers.index_select(0, self.attacked)

    @cached_property
    def pairs(self) -> Tensor:
        """(E_s,) position receiver * N + sender of each edge in an (N, N) matrix of pairs."""
        return self.receivers * self.totals[1] + self.edges.senders


def make_shards(
    edges: Neighbourhoods, attack_edges: Tensor, max_edges: int, senders: int | None = None
) -> list[Shard]:
    """Cut the receivers into contiguous ranges of at most ``max_edges`` edges each (a receiver
    with more edges than that gets a shard of its own). ``senders``: the number of rows of the
    round's models that the edges' senders index, on a rank of a partitioned run (its agents
    and halo, :mod:`byzmtl.engine.partition`), whose shards are then always sparse; default:
    the receivers, ``edges.n_agents``."""
    totals = (edges.n_edges, edges.n_agents if senders is None else senders)
    dense = senders is None
    rows = torch.arange(attack_edges.numel(), device=attack_edges.device)
    offsets = np.concatenate([[0], np.cumsum(edges.degrees.cpu().numpy())])
    if offsets[-1] <= max_edges:
        everything = (slice(0, edges.n_agents), slice(0, edges.n_edges), edges)
        return [Shard(*everything, edges.receivers, attack_edges, rows, totals, dense)]
    shards, first = [], 0
    while first < edges.n_agents:
        last = int(np.searchsorted(offsets, offsets[first] + max_edges, side="right")) - 1
        last = min(max(last, first + 1), edges.n_agents)
        lo, hi = int(offsets[first]), int(offsets[last])
        inside = (attack_edges >= lo) & (attack_edges < hi)
        local = Neighbourhoods(
            receivers=edges.receivers[lo:hi] - first,
            senders=edges.senders[lo:hi],
            self_edges=edges.self_edges[first:last] - lo,
            degrees=edges.degrees[first:last],
            n_agents=last - first,
        )
        shards.append(
            Shard(
                slice(first, last),
                slice(lo, hi),
                local,
                edges.receivers[lo:hi],
                attack_edges[inside] - lo,
                rows[inside],
                totals,
                dense,
            )
        )
        first = last
    return shards
