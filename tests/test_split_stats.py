"""Statistics over agents held in pieces (byzmtl.split_stats): any split into consecutive
pieces gives the whole set's mean, min, max and values bit for bit; one piece of up to 2^15
members gives torch's own mean."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from byzmtl import split_stats
from byzmtl.split_stats import (
    combined_max,
    combined_mean,
    combined_min,
    combined_values,
    piece,
)


def _bits(value: torch.Tensor) -> bytes:
    return value.contiguous().numpy().tobytes()


def _split(values: torch.Tensor, cuts: list[int], keep: bool = False) -> list[split_stats.Piece]:
    total = values.shape[-1]
    bounds = [0, *sorted(cuts), total]
    return [piece(values[..., a:b], a, total, keep) for a, b in itertools.pairwise(bounds)]


def _statistics(pieces: list[split_stats.Piece]) -> list[bytes]:
    return [
        _bits(combined_mean(pieces)),
        _bits(combined_min(pieces)),
        _bits(combined_max(pieces)),
        _bits(combined_values(pieces)),
    ]


@settings(max_examples=150, deadline=None)
@given(
    total=st.integers(1, 120),
    block=st.sampled_from([1, 2, 3, 5, 8, 64]),
    cuts=st.lists(st.floats(0, 1), max_size=6),
    dtype=st.sampled_from([torch.float64, torch.float32]),
    nan=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_any_split_gives_the_whole_sets_statistics_bit_for_bit(
    total: int, block: int, cuts: list[float], dtype: torch.dtype, nan: bool, seed: int
) -> None:
    """The law, with small blocks so that pieces start and end inside blocks, span several
    and hold none: the pieces of any consecutive split, empty pieces included, combine to the
    statistics of the whole set in one piece."""
    generator = torch.Generator().manual_seed(seed)
    values = (torch.randn((2, 3, total), generator=generator) * 1e3).to(dtype)
    if nan:
        values[1, 0, total // 2] = torch.nan
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(split_stats, "BLOCK", block)
        whole = _statistics(_split(values, [], keep=True))
        split = _statistics(_split(values, [round(c * total) for c in cuts], keep=True))
    assert split == whole


def test_a_split_of_more_members_than_a_block_is_the_whole_and_accurate() -> None:
    """At the real block size (2^15): 100,000 members cut inside blocks, at a block's edge
    and into a piece with no whole block give the whole's bits, within 1e-13 of float64's
    exactly rounded mean."""
    values = (
        torch.randn((2, 100_000), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        + 5
    )
    whole = _statistics(_split(values, [], keep=True))
    for cuts in ([1], [32_768], [20_000, 40_000], [33_000, 33_001, 70_000], [99_999]):
        assert _statistics(_split(values, cuts, keep=True)) == whole, cuts
    exact = np.array([math.fsum(row.tolist()) / 100_000 for row in values])
    np.testing.assert_allclose(combined_mean(_split(values, [])).numpy(), exact, rtol=1e-13)


@settings(max_examples=40, deadline=None)
@given(total=st.integers(1, 1 << 15), seed=st.integers(0, 2**31 - 1))
def test_one_piece_of_up_to_a_block_is_torchs_mean_min_and_max(total: int, seed: int) -> None:
    """What earlier versions recorded keeps its bits wherever a subset has at most 2^15
    members: torch's mean, amin and amax."""
    values = torch.randn(
        (3, total), generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    pieces = _split(values, [])
    assert _bits(combined_mean(pieces)) == _bits(values.mean(-1))
    assert _bits(combined_min(pieces)) == _bits(values.amin(-1))
    assert _bits(combined_max(pieces)) == _bits(values.amax(-1))


def test_pieces_that_leave_members_out_are_refused() -> None:
    values = torch.arange(10.0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(split_stats, "BLOCK", 4)
        with pytest.raises(ValueError, match="do not cover block 1"):
            combined_mean([piece(values[:4], 0, 10), piece(values[8:], 8, 10)])
    with pytest.raises(ValueError, match=r"not within 0\.\.9"):
        piece(values, 3, 10)
    with pytest.raises(ValueError, match="without their values"):
        combined_values([piece(values, 0, 10)])
