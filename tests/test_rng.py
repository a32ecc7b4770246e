"""Counter-based randomness: a pure function of (seed, stream, key, iteration)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from byzmtl import rng


@given(st.integers(0, 2**40), st.integers(0, 10_000), st.integers(1, 50))
def test_draws_do_not_depend_on_batching(seed: int, iteration: int, n: int) -> None:
    keys = np.arange(n, dtype=np.uint64)
    together = rng.uniform(seed, "s", keys, iteration, 3)
    alone = np.concatenate(
        [rng.uniform(seed, "s", keys[i : i + 1], iteration, 3) for i in range(n)]
    )
    np.testing.assert_array_equal(together, alone)
    reversed_ = rng.uniform(seed, "s", keys[::-1], iteration, 3)
    np.testing.assert_array_equal(reversed_[::-1], together)


def test_uniform_statistics_and_independence() -> None:
    u = rng.uniform(0, "stats", np.arange(200_000, dtype=np.uint64), 3, 2)
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.003
    assert abs(u.var() - 1 / 12) < 0.002
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.01
    counts = np.histogram(u[:, 0], bins=20, range=(0, 1))[0]
    expected = len(u) / 20
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 45  # 19 degrees of freedom: p < 0.001 above 43.8


def test_streams_seeds_and_iterations_give_different_numbers() -> None:
    keys = np.arange(100, dtype=np.uint64)
    a = rng.uniform(1, "a", keys, 0)
    assert not np.allclose(a, rng.uniform(1, "b", keys, 0))
    assert not np.allclose(a, rng.uniform(2, "a", keys, 0))
    assert not np.allclose(a, rng.uniform(1, "a", keys, 1))


def test_normal_moments() -> None:
    z = rng.normal(4, "n", np.arange(100_000, dtype=np.uint64), 0, 3)
    assert z.shape == (100_000, 3)
    assert abs(z.mean()) < 0.01
    assert abs(z.std() - 1) < 0.01


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**63 - 1),
    keys=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=20),
    iteration=st.integers(0, 2**40),
    size=st.integers(1, 9),
)
def test_draws_on_the_device_are_the_numpy_draws_bit_for_bit(
    seed: int, keys: list[int], iteration: int, size: int
) -> None:
    words = np.array(keys, dtype=np.uint64)
    expected = rng.uniform(seed, "stream", words, iteration, size)
    got = rng.uniform_tensor(seed, "stream", rng.key_tensor(words), iteration, size)
    assert np.array_equal(got.numpy(), expected)
    normals = rng.normal_tensor(seed, "stream", rng.key_tensor(words), iteration, size)
    assert np.array_equal(normals.numpy(), rng.normal(seed, "stream", words, iteration, size))
