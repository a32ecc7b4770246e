"""A graph's edges as torch tensors, and the per-neighbourhood operations the engine, rules and
attacks share: normalising per-edge affinities into weights and combining messages with them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

from byzmtl.graph import Graph
from byzmtl.ops import branches_freely, segment_sums, within_range

_CACHED_EDGES = 1 << 16  # per-edge constants of edge lists up to this size are kept


@dataclass(frozen=True, eq=False)
class Neighbourhoods:
    """A graph's edges as torch tensors, sorted by receiver (see :mod:`byzmtl.graph`).

    The engine may hand a rule the neighbourhoods of a shard of receivers: receivers are then
    numbered 0..n_agents-1 within the shard (as are the rows of ``RuleInputs.previous`` and
    ``psi``), while ``senders`` keep their ids in the whole graph (to tell senders apart, never
    to index models)."""

    receivers: Tensor  # (E,) long
    senders: Tensor  # (E,) long
    self_edges: Tensor  # (N,) long: index of agent k's self-loop
    degrees: Tensor  # (N,) long: |N_k|
    n_agents: int
    first: int = 0  # the id in the whole graph of receiver 0 (a partitioned run's ranks)
    _cache: dict[tuple, Tensor | tuple[Tensor, Tensor]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_graph(cls, graph: Graph, device: torch.device | str = "cpu") -> Neighbourhoods:
        def to(a: np.ndarray) -> Tensor:
            return torch.as_tensor(a, dtype=torch.long, device=device)

        return cls(
            to(graph.receivers),
            to(graph.senders),
            to(graph.self_edges),
            to(graph.degrees),
            graph.n_agents,
        )

    @property
    def n_edges(self) -> int:
        return self.receivers.numel()

    @cached_property
    def is_self(self) -> Tensor:
        """(E,) bool: the edge is a self-loop."""
        flags = torch.zeros(self.n_edges, dtype=torch.bool, device=self.receivers.device)
        return flags.index_fill_(0, self.self_edges, True)

    def self_weights(self, dtype: torch.dtype) -> Tensor:
        """(E,): 1 on self-loops, 0 elsewhere (the weights of no cooperation)."""
        key = ("self_weights", dtype)
        if key not in self._cache:
            self._cache[key] = self.is_self.to(dtype)
        return self._cache[key]  # type: ignore[return-value]

    def score_floor(self, dtype: torch.dtype) -> Tensor:
        """(E,): 2 |N_k| / finfo.max on every edge (k, l), the smallest score :func:`inverse`
        inverts: below it 1 / score would let a neighbourhood's sum of affinities overflow.
        Kept for small edge lists; recomputed (the same numbers) for large ones, whose shards
        would otherwise hold 8 bytes per edge of the whole graph for it."""
        key = ("score_floor", dtype)
        if key in self._cache:
            return self._cache[key]  # type: ignore[return-value]
        degrees = self.degrees.to(dtype).index_select(0, self.receivers)
        floor = degrees.mul_(2.0 / torch.finfo(dtype).max)
        if self.n_edges <= _CACHED_EDGES:
            self._cache[key] = floor
        return floor

    @cached_property
    def receiver_self_edge(self) -> Tensor:
        """(E,) long: for edge (k, l), the index of k's self-loop (where r_kk lives)."""
        return self.self_edges[self.receivers]

    @cached_property
    def padded(self) -> tuple[Tensor, Tensor]:
        """(N, max degree) edge indices of every neighbourhood, and the mask of real entries;
        padding points at the receiver's self-loop so that gathers stay in range."""
        offsets = torch.cumsum(self.degrees, 0) - self.degrees
        slot = torch.arange(int(self.degrees.max()), device=self.degrees.device)
        mask = slot[None, :] < self.degrees[:, None]
        index = torch.where(mask, offsets[:, None] + slot[None, :], self.self_edges[:, None])
        return index, mask

    def combine(self, weights: Tensor, messages: Tensor) -> Tensor:
        """w_k = sum over l in N_k of c_lk * m_lk, for every receiver of every replica:
        weights (R, E) and messages (R, E, d) -> (R, N, d). Non-finite messages must be zeroed;
        for weights from :meth:`normalise` the result is finite (:func:`within_range`)."""
        replicas, n_edges, dim = messages.shape
        key = ("layout", replicas)
        if key not in self._cache:
            counts = self.degrees.repeat(replicas)
            offsets = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
            self._cache[key] = (offsets, torch.arange(replicas * n_edges, device=offsets.device))
        offsets, columns = self._cache[key]
        flat = segment_sums(offsets, columns, weights.reshape(-1), messages.reshape(-1, dim))
        return within_range(flat.reshape(replicas, self.n_agents, dim))

    def _replicated_receivers(self, replicas: int) -> Tensor:
        """(R * E,) receiver of each edge of R stacked copies of the graph, copy r's agents
        numbered r * N .. r * N + N - 1."""
        if replicas == 1:  # the edge list itself: no copy
            return self.receivers
        key = ("receivers", replicas)
        if key not in self._cache:
            shift = torch.arange(replicas, device=self.receivers.device)[:, None] * self.n_agents
            self._cache[key] = (self.receivers[None, :] + shift).reshape(-1)
        return self._cache[key]  # type: ignore[return-value]

    def normalise(self, affinities: Tensor) -> Tensor:
        """c_lk = a_lk / sum over m in N_k of a_mk, for (E,) or (R, E) affinities.

        Sound for any affinities: the weights are finite, >= 0 and sum to one over every
        neighbourhood. NaN and negative affinities count as 0; where a receiver's affinities
        are not all finite or their sum overflows, they are first divided by their largest
        (then +inf affinities share the weight equally and the others get 0); a receiver whose
        affinities are all 0 keeps itself (c_kk = 1). The check costs one read of the
        affinities; receivers whose affinities are finite, >= 0 and of finite positive sum
        get exactly a_lk / sum."""
        flat = affinities.reshape(-1)
        replicas = flat.numel() // self.n_edges
        index = self._replicated_receivers(replicas)
        totals = flat.new_zeros(replicas * self.n_agents).index_add_(0, index, flat)
        if not branches_freely(flat):  # the sound path, without reading a flag
            return self._normalise_any(flat, index).view(affinities.shape)
        low, high = torch.aminmax(totals)  # read as Python numbers: cheaper than comparisons
        if not (low.item() > 0 and high.item() < math.inf and flat.min().item() >= 0):
            return self._normalise_any(flat, index).view(affinities.shape)
        per_edge = totals.index_select(0, index)
        return torch.div(flat, per_edge, out=per_edge).view(affinities.shape)

    def _normalise_any(self, flat: Tensor, index: Tensor) -> Tensor:
        """:meth:`normalise` for affinities that are not all finite and >= 0 with a finite
        positive sum per receiver (see there)."""
        size = index.numel() // self.n_edges * self.n_agents
        clean = torch.fmax(flat, flat.new_zeros(()))  # NaN and negative -> 0
        totals = clean.new_zeros(size).index_add_(0, index, clean)
        sound = ((totals > 0) & (totals < torch.inf)).index_select(0, index)
        peak = clean.new_zeros(size).scatter_reduce_(0, index, clean, "amax").index_select(0, index)
        scaled = torch.where(peak < torch.inf, clean / peak, (clean == torch.inf).to(clean.dtype))
        self_loops = self.is_self.repeat(index.numel() // self.n_edges)
        scaled = torch.where(peak > 0, scaled, self_loops.to(clean.dtype))
        shares = torch.where(sound, clean, scaled)
        totals = shares.new_zeros(size).index_add_(0, index, shares)
        return shares / totals.index_select(0, index)

    def sum_per_receiver(self, values: Tensor) -> Tensor:
        """sum over l in N_k of values[(k, l)], for every k; ``values`` is (E,) or (E, d)."""
        out = values.new_zeros((self.n_agents, *values.shape[1:]))
        return out.index_add_(0, self.receivers, values)
