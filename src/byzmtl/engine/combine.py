"""Combine: every replica's new models on one shard, from the rules' outputs. The affinities of
all weight rules are normalised and their weighted sums formed at once, straight from the models
the receivers hear and the attack's per-edge messages, never from a per-edge copy:

    w_k = sum over honest l of c_lk psi_l  +  sum over attacked edges (k, b) of c_bk m_bk.

The first sum is one batched product with a dense (N_s, N) weight matrix per rule when most of
its entries are edges, else a sparse (CSR) product; the second a sparse one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from byzmtl.engine.shards import Shard
from byzmtl.ops import segment_sums
from byzmtl.rules.base import Combination, Rule, WeightRule


def _csr(counts: Tensor, columns: Tensor) -> tuple[Tensor, Tensor]:
    """CSR row offsets from per-row counts, and the flattened columns."""
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)]), columns.reshape(-1)


@dataclass(frozen=True, eq=False)
class CombineLayout:
    """Index tensors of one shard's combine for W weight rules, built once per shard."""

    dense: Tensor | None  # (W * E_s,) entries of (W, N_s, N) matrices, or None: sparse
    sparse: tuple[Tensor, Tensor] | None  # CSR offsets, columns into (W * N, d) psi rows
    attacked: tuple[Tensor, Tensor]  # CSR offsets, columns into (W * B_s, d) attack messages

    @classmethod
    def of(cls, shard: Shard, rules: int) -> CombineLayout:
        edges, n_agents = shard.edges, shard.totals[1]
        device = edges.senders.device
        copies = torch.arange(rules, device=device)[:, None]
        dense = sparse = None
        if shard.dense:
            size = edges.n_agents * n_agents
            dense = (edges.receivers * n_agents + edges.senders + copies * size).reshape(-1)
        else:
            columns = edges.senders if rules == 1 else edges.senders + copies * n_agents
            sparse = _csr(edges.degrees.repeat(rules), columns)  # one rule: no copy
        receivers = edges.receivers.index_select(0, shard.attacked)
        counts = torch.bincount(receivers, minlength=edges.n_agents).repeat(rules)
        slots = torch.arange(shard.attacked.numel(), device=device)
        attacked = _csr(counts, slots + copies * shard.attacked.numel())
        return cls(dense, sparse, attacked)

    def weighted_sums(
        self, shard: Shard, weights: Tensor, psi: Tensor, attack_values: Tensor | None
    ) -> Tensor:
        """(W, N_s, d) sums c_lk m_lk for weights (W, E_s), models heard psi (W, N, d) and the
        attack's messages on the shard's attacked edges (W, B_s, d)."""
        n_agents, n_receivers = shard.totals[1], shard.edges.n_agents
        attacked = attack_values is not None and shard.attacked.numel()
        honest = weights.index_fill(1, shard.attacked, 0.0) if attacked else weights
        if self.dense is not None:
            matrix = weights.new_zeros((weights.shape[0], n_receivers, n_agents))
            matrix.view(-1).index_copy_(0, self.dense, honest.reshape(-1))
            out = torch.bmm(matrix, psi)
        else:
            assert self.sparse is not None
            offsets, columns = self.sparse
            flat = segment_sums(offsets, columns, honest.reshape(-1), psi.flatten(0, 1))
            out = flat.view(weights.shape[0], n_receivers, -1)
        if attacked:
            assert attack_values is not None
            offsets, columns = self.attacked
            values = weights.index_select(1, shard.attacked).reshape(-1)
            flat = segment_sums(offsets, columns, values, attack_values.flatten(0, 1))
            out += flat.view(out.shape)
        return out


class Combiner:
    """Turns the rules' outputs on a shard into every replica's new models (R, N_s, d) and every
    rule's edge weights (where it has them)."""

    def __init__(self, rules: Sequence[Rule], device: torch.device) -> None:
        self.replicas = len(rules)
        self.weight_rows = [r for r, rule in enumerate(rules) if isinstance(rule, WeightRule)]
        self.weight_index = torch.as_tensor(self.weight_rows, device=device)
        self._layouts: dict[int, CombineLayout] = {}

    def __call__(
        self,
        shard: Shard,
        outputs: Sequence[Tensor | Combination],
        psi: Tensor,
        attack_values: Tensor | None,
    ) -> tuple[Tensor, list[Tensor | None]]:
        rows = self.weight_rows
        combinations = {r: out for r, out in enumerate(outputs) if isinstance(out, Combination)}
        weights = [None if r in rows else combinations[r].weights for r in range(self.replicas)]
        models = [None if r in rows else combinations[r].models for r in range(self.replicas)]
        if rows:
            affinities = torch.stack([outputs[r] for r in rows])  # type: ignore[misc]
            stacked = shard.edges.normalise(affinities)
            if len(rows) < self.replicas:
                psi = psi.index_select(0, self.weight_index)
                if attack_values is not None:
                    attack_values = attack_values.index_select(0, self.weight_index)
            combined = self._layout(shard).weighted_sums(shard, stacked, psi, attack_values)
            if len(rows) == self.replicas:
                return combined, list(stacked.unbind(0))
            for row, r in enumerate(rows):
                models[r], weights[r] = combined[row], stacked[row]
        return torch.stack(models), weights  # type: ignore[arg-type]

    def _layout(self, shard: Shard) -> CombineLayout:
        layout = self._layouts.get(id(shard))
        if layout is None:
            layout = self._layouts[id(shard)] = CombineLayout.of(shard, len(self.weight_rows))
        return layout
