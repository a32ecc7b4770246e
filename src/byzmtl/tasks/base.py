"""What every case study shares: its settings model, its defaults, and the registry.

A case study is a class registered in ``CASES`` that implements the engine's ``Task`` protocol
(see :mod:`byzmtl.engine`) and is built from its own validated settings (the ``[task]`` table of a
run configuration) by ``from_settings``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from byzmtl.registry import Registry


class Settings(BaseModel):
    """Base of every case study's settings: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class CaseDefaults:
    """The paper's choices for a case study, used where a run configuration is silent."""

    attack: str
    attack_params: dict[str, Any] = field(default_factory=dict)
    nu: float = 0.1
    r0: float = 10.0
    dtype: str = "float64"
    graph: dict[str, Any] = field(default_factory=lambda: {"kind": "complete"})


class CaseStudy(ABC):
    """A case study: a task for the engine plus what the experiment layer needs to report it."""

    name: ClassVar[str]
    description: ClassVar[str]
    settings_model: ClassVar[type[Settings]]
    defaults: ClassVar[CaseDefaults]
    time_unit: ClassVar[str] = "iteration"  # the column that indexes recorded metrics
    final_fraction: ClassVar[float] = 0.1  # summary "final" = mean over this tail of records
    log_metrics: ClassVar[frozenset[str]] = frozenset()  # metrics drawn on a log scale
    plot_groups: ClassVar[bool] = False  # one figure row per task group, besides "all"
    # the metric that measures an agent's loss: regret against no cooperation and the loss
    # columns of ``byzmtl matrix`` use it (learning case studies: e.g. "test_loss")
    loss_metric: ClassVar[str] = "loss"
    higher_is_better: ClassVar[frozenset[str]] = frozenset()  # e.g. accuracy: worst = min

    n_agents: int
    n_rounds: int
    metric_names: tuple[str, ...]
    groups: np.ndarray  # (N,) task group index of every agent
    group_names: list[str]
    keys: np.ndarray  # (N,) uint64 random-number identities of the agents (see byzmtl.rng)
    positions: np.ndarray | None = None  # (N, 2) where agents have a place (for drawing)

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Any, seed: int, dtype: torch.dtype, device: str) -> CaseStudy:
        """Build the case study for one seed."""

    # Optional hook of data-poisoning attacks (see byzmtl.attacks.poisoning):
    #     def flip_labels(self, batch, agents: Tensor) -> batch
    # returns a copy of ``batch`` in which the agents flagged in ``agents`` ((N,) bool) have
    # flipped labels. A case study without it cannot run the ``label-flip`` attack.

    def default_byzantine(self, count: int) -> np.ndarray | None:
        """Byzantine agents the paper fixes for ``count`` attackers, or None for a random draw."""
        return None

    def time_values(self) -> np.ndarray:
        """The value of the time column for each recorded round."""
        return np.arange(1, self.n_rounds + 1)


CASES: Registry[CaseStudy] = Registry("case study")
