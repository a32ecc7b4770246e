"""Mean, min and max over a set of agents whose values are held in pieces (each rank of a
partitioned run holds its own agents), equal bit for bit to those of the whole set.

A subset of M members is numbered 0..M-1 in increasing agent id; a holder has the members
[start, stop). The mean is summed in a fixed order, in blocks of B = 2^15 consecutive members:

    s_b  = x_(bB) + ... + x_(min((b+1)B, M) - 1)      (torch's reduction of at most B values,
                                                     never split between threads)
    mean = (s_0 + ... + s_(n-1)) / M                  (s_0 / M when n = 1: torch's mean)

A holder sums the blocks that lie wholly in its range and passes on the values of the others
(at most two partial blocks, at its ends: a few hundred kB, whatever the network's size); the
combination sums those blocks from their pieces in member order. Min and max are exact in any
order. With ``keep_values`` a piece carries all its values (for percentiles). One piece of the
whole set gives the same numbers as any split of it (``tests/test_split_stats.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from byzmtl.ops import BLOCK, block_sums  # BLOCK: members per block of the mean


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True, eq=False)
class Piece:
    """A holder's part of the statistics of a subset: members [start, stop) of ``total``."""

    start: int
    stop: int
    total: int
    first_block: int  # the first block wholly inside [start, stop)
    block_sums: Tensor  # (..., F) sums of the blocks wholly inside, in order
    head: Tensor  # (..., h) values of members start..start+h-1, in a block it does not hold
    tail: Tensor  # (..., t) values of members stop-t..stop-1, likewise
    lowest: Tensor | None  # (...,) min over its members; None: it has none
    highest: Tensor | None
    values: Tensor | None = None  # (..., stop - start) all of them, when kept


def piece(values: Tensor, start: int, total: int, keep_values: bool = False) -> Piece:
    """The piece of members [start, start + n) of ``total`` whose values are ``values``
    (..., n)."""
    stop = start + values.shape[-1]
    if not 0 <= start <= stop <= total:
        raise ValueError(f"members {start}..{stop - 1} are not within 0..{total - 1}")
    low = _ceil(start, BLOCK) * BLOCK
    high = total if stop == total else stop // BLOCK * BLOCK
    if low >= high:  # no whole block: every value passed on
        low = high = stop
    empty = values.shape[-1] == 0
    return Piece(
        start,
        stop,
        total,
        low // BLOCK,
        block_sums(values[..., low - start : high - start], BLOCK),
        _compact(values[..., : low - start]),
        _compact(values[..., high - start :]),
        None if empty else values.amin(-1),
        None if empty else values.amax(-1),
        values if keep_values else None,
    )


def on_host(p: Piece) -> Piece:
    """``p`` with its tensors on the CPU (what the ranks gather)."""

    def host(value: Tensor | None) -> Tensor | None:
        return None if value is None else value.cpu()

    return replace(
        p,
        block_sums=p.block_sums.cpu(),
        head=p.head.cpu(),
        tail=p.tail.cpu(),
        lowest=host(p.lowest),
        highest=host(p.highest),
        values=host(p.values),
    )


def _compact(part: Tensor) -> Tensor:
    """``part`` holding its own storage: a piece is pickled to be gathered, and a pickled view
    carries its whole storage."""
    return part.clone()


def combined_sum(pieces: Sequence[Piece]) -> Tensor:
    """The fixed-order sum of the subset's values (see the module) from all its pieces, in
    member order (every member in exactly one)."""
    total = pieces[0].total
    blocks: list[Tensor | None] = [None] * _ceil(total, BLOCK)
    loose: list[Tensor] = []
    loose_starts: list[int] = []
    for p in pieces:
        for j, block_sum in enumerate(p.block_sums.unbind(-1)):
            blocks[p.first_block + j] = block_sum
        if p.head.shape[-1]:
            loose.append(p.head)
            loose_starts.append(p.start)
        if p.tail.shape[-1]:
            loose.append(p.tail)
            loose_starts.append(p.stop - p.tail.shape[-1])
    _fill_loose(blocks, loose, loose_starts)
    missing = [b for b, block in enumerate(blocks) if block is None]
    if missing:
        raise ValueError(f"the pieces do not cover block {missing[0]} of the subset")
    if len(blocks) == 1:
        return blocks[0]  # type: ignore[return-value]
    return torch.stack(blocks, -1).sum(-1)  # type: ignore[arg-type]


def _fill_loose(blocks: list[Tensor | None], segments: list[Tensor], starts: list[int]) -> None:
    """Sum every block made of loose values: its segments joined in member order."""
    by_block: dict[int, list[Tensor]] = {}
    for segment, start in zip(segments, starts, strict=True):
        position = start
        while position < start + segment.shape[-1]:
            b = position // BLOCK
            end = min((b + 1) * BLOCK, start + segment.shape[-1])
            by_block.setdefault(b, []).append(segment[..., position - start : end - start])
            position = end
    for b, parts in by_block.items():
        joined = parts[0] if len(parts) == 1 else torch.cat(parts, -1)
        blocks[b] = joined.sum(-1)


def combined_mean(pieces: Sequence[Piece]) -> Tensor:
    """The subset's mean (see the module)."""
    return combined_sum(pieces) / pieces[0].total


def combined_min(pieces: Sequence[Piece]) -> Tensor:
    """The subset's min (NaN if any value is NaN, as ``amin``)."""
    return extreme([p.lowest for p in pieces], torch.amin)


def combined_max(pieces: Sequence[Piece]) -> Tensor:
    """The subset's max (NaN if any value is NaN, as ``amax``)."""
    return extreme([p.highest for p in pieces], torch.amax)


def extreme(values: Sequence[Tensor | None], pick: Callable[..., Tensor]) -> Tensor:
    """The ``pick`` (``torch.amin`` or ``torch.amax``) of the holders' own extremes (None: a
    holder without members): the extreme of the whole set, whatever the split."""
    held = [v for v in values if v is not None]
    if len(held) == 1:
        return held[0]
    return pick(torch.stack(held, -1), -1)


def combined_values(pieces: Sequence[Piece]) -> Tensor:
    """(..., M) every value of the subset, in member order (pieces made with
    ``keep_values``)."""
    kept = [p.values for p in pieces if p.values is not None]
    if len(kept) < len(pieces):
        raise ValueError("these pieces were made without their values")
    return kept[0] if len(kept) == 1 else torch.cat(kept, -1)
