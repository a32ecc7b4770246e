"""Every agent's examples and which of them it takes in each round.

Agent k holds n_k training examples, reshuffled at every epoch. An epoch is
T = min_k ceil(n_k / b_k) rounds, the rounds the agent with the fewest batches needs to see all its
data once (the authors' convention: their loop ends an epoch at the first exhausted data loader);
in round t of an epoch agent k takes examples t*b_k .. (t+1)*b_k - 1 of its shuffled order, so an
agent with more batches sees a fresh random part of its data each epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from byzmtl import rng


@dataclass(frozen=True, eq=False)
class AgentData:
    """One agent's examples: inputs ``(n, *input_shape)`` and integer class labels ``(n,)``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def __post_init__(self) -> None:
        if len(self.x_train) != len(self.y_train) or len(self.x_test) != len(self.y_test):
            raise ValueError("every input needs a label")
        if not len(self.x_train) or not len(self.x_test):
            raise ValueError("every agent needs training and test examples")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError("training and test inputs differ in shape")


@dataclass(frozen=True, eq=False)
class SizeGroup:
    """The agents whose batch has the same size this round, with their batches."""

    agents: Tensor  # (A,) long
    x: Tensor  # (A, B, *input_shape)
    y: Tensor  # (A, B) long
    learning: Tensor  # (L,) long: positions in ``agents`` of those taking their local step


@dataclass(frozen=True, eq=False)
class NeuralBatch:
    """Every agent's mini-batch of one round, grouped by batch size."""

    groups: tuple[SizeGroup, ...]
    group_of: Tensor  # (N,) long: the size group of each agent
    group_of_host: np.ndarray  # (N,) int64: the same in host memory
    slot: Tensor  # (N,) long: each agent's position in its group
    learners: Tensor  # (L,) long: agents taking their local step, group after group
    epoch_end: bool


def cyclic(pattern: Sequence[float], n: int) -> np.ndarray:
    """``pattern[k mod len(pattern)]`` for k = 0..n-1: the paper's per-agent schedules."""
    return np.asarray(pattern, dtype=np.float64)[np.arange(n) % len(pattern)]


class Schedule:
    """Which training examples every agent takes in each round (see the module docstring)."""

    def __init__(
        self, seed: int, keys: np.ndarray, n_train: np.ndarray, batch_sizes: np.ndarray
    ) -> None:
        self.seed, self.keys = seed, keys
        self.n_train, self.batch_sizes = n_train, batch_sizes
        self.offsets = np.concatenate([[0], np.cumsum(n_train)[:-1]])
        self.rounds_per_epoch = int(np.min(-(-n_train // batch_sizes)))
        self._order: tuple[int, np.ndarray] | None = None

    def order(self, epoch: int) -> np.ndarray:
        """(N, max n_k): agent k's training examples (global rows) in this epoch's order."""
        if self._order is None or self._order[0] != epoch:
            width = int(self.n_train.max())
            u = rng.uniform(self.seed, "shuffle", self.keys, epoch, width)
            u[np.arange(width)[None, :] >= self.n_train[:, None]] = 2.0  # padding sorts last
            rows = np.argsort(u, axis=1, kind="stable") + self.offsets[:, None]
            self._order = (epoch, rows)
        return self._order[1]

    def rows(self, iteration: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch sizes s (N,) and the rows (N, max s) of every agent's batch: agent k's examples
        (global rows) are the first s_k entries of row k."""
        epoch, t = divmod(iteration, self.rounds_per_epoch)
        start = t * self.batch_sizes
        sizes = np.minimum(self.batch_sizes, self.n_train - start)
        order = self.order(epoch)
        if (start == start[0]).all() and (sizes == sizes[0]).all():  # one slice for all
            return sizes, order[:, start[0] : start[0] + sizes[0]]
        position = start[:, None] + np.arange(int(sizes.max()))[None, :]
        return sizes, np.take_along_axis(order, np.minimum(position, order.shape[1] - 1), axis=1)
