"""Neighbourhoods as padded blocks: the shape the robust aggregators compute on.

Receiver k's received messages sit in row k of an (N, D, d) block, D the largest degree: slot j
of row k holds the message of k's j-th edge (edges are sorted by receiver, self-loop included),
and ``valid`` marks the slots that hold a real, finite message. Every aggregator then runs on all
receivers at once, neighbourhoods of different sizes being masked rather than looped over.

Non-finite messages. The engine zeroes a message with a NaN or Inf coordinate and flags it
(``RuleInputs.finite`` False). Robust aggregators treat such a message as absent; since only a
faulty sender can send it, it also counts against the number of Byzantine neighbours the rule was
told to tolerate: with f tolerated and m non-finite messages at receiver k, the rule tolerates
``max(f - m, 0)`` among the ``|N_k| - m`` remaining ones (:meth:`Block.tolerated`). Assumptions of
the form ``|N_k| > a f + c`` (a >= 1) then keep holding after the removal.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from byzmtl.ops import branches_freely
from byzmtl.rules.base import (
    Neighbourhoods,
    RuleAssumptionError,
    RuleInputs,
    power_of_two_below,
)


@dataclass(frozen=True, eq=False)
class Block:
    """One round's messages, one padded row per receiver."""

    values: Tensor  # (N, D, d) messages; padding repeats the receiver's own message
    valid: Tensor  # (N, D) bool: a real slot holding a finite message
    slots: Tensor  # (N, D) bool: a real slot (an edge of the receiver)
    count: Tensor  # (N,) long: number of valid messages
    missing: Tensor  # (N,) long: number of non-finite messages

    def tolerated(self, f: int) -> Tensor:
        """(N,) long: max(f - m_k, 0), the Byzantine senders left to tolerate among the finite
        messages once the m_k non-finite ones (certainly faulty) are dropped."""
        return (f - self.missing).clamp_min(0)

    def to_edges(self, per_slot: Tensor) -> Tensor:
        """(N, D) values per slot -> (E,) values per edge, in edge order."""
        return per_slot[self.slots]

    def scaled_for_distances(self, centres: Tensor) -> tuple[Block, Tensor]:
        """The block with row k multiplied by s_k, and s (N,): s_k <= 1 is the power of two
        that keeps any sum of |N_k| squared distances between row k's messages and ``centres``
        (N, d) finite, s_k = 1 unless row k holds values beyond sqrt(finfo.max / (8 d |N_k|)).
        Distances in the scaled block are those of the block times s_k, exactly (short of
        underflow), so they rank the same; but they cannot overflow."""
        dtype, dim = self.values.dtype, self.values.shape[2]
        limits = (torch.finfo(dtype).max / (8 * dim) / self.slots.sum(1).to(dtype)).sqrt()
        low, high = torch.aminmax(self.values.flatten(1), dim=1)
        own_low, own_high = torch.aminmax(centres, dim=1)
        largest = torch.maximum(torch.maximum(high, -low), torch.maximum(own_high, -own_low))
        scale = power_of_two_below(largest, limits)
        if branches_freely(scale) and bool((scale == 1).all()):
            return self, scale
        values = self.values * scale[:, None, None]
        return Block(values, self.valid, self.slots, self.count, self.missing), scale


def block(x: RuleInputs) -> Block:
    """The padded block of this round's messages (see the module docstring)."""
    index, slots = x.edges.padded
    values = x.messages[index]
    valid = slots if x.all_finite else slots & x.finite[index]
    count = valid.sum(1)
    return Block(values, valid, slots, count, x.edges.degrees - count)


def check_degree(edges: Neighbourhoods, minimum: int, rule: str, why: str) -> None:
    """Raise :class:`RuleAssumptionError` naming the first agent whose neighbourhood (itself
    included) has fewer than ``minimum`` agents (by its id in the whole graph)."""
    short = torch.nonzero(edges.degrees < minimum).flatten()
    if short.numel():
        k = int(short[0])
        raise RuleAssumptionError(
            f"{rule}: agent {edges.first + k} has {int(edges.degrees[k])} agents in its "
            f"neighbourhood (itself included), fewer than the {minimum} that {why} needs"
        )


def rank_slots(keys: Tensor, valid: Tensor) -> Tensor:
    """(N, D) long rank of each slot by increasing ``keys`` within its row, invalid slots last
    (ties broken by slot order)."""
    ordered = torch.where(valid, keys, torch.inf).argsort(dim=1, stable=True)
    return torch.empty_like(ordered).scatter_(
        1, ordered, torch.arange(keys.shape[1], device=keys.device).expand_as(ordered).contiguous()
    )
