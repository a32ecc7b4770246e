"""What every case study shares: its settings model, its defaults, and the registry.

A case study is a class registered in ``CASES`` that implements the engine's ``Task`` protocol
(see :mod:`byzmtl.engine`) and is built from its own validated settings (the ``[task]`` table of a
run configuration) by ``from_settings``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from pydantic import ConfigDict, field_validator
from torch import Tensor

from byzmtl.registry import Registry
from byzmtl.scalars import ExactScalars

LARGEST_SETTING = 1e100
"""The largest magnitude of a real-valued setting: squares and products of a few such numbers
(squared distances between targets, say) stay finite in float64."""


class Settings(ExactScalars):
    """Base of every case study's settings: unknown fields, non-finite numbers, real numbers
    beyond +-``LARGEST_SETTING`` (in any field, lists and tuples included) and numbers or
    switches of another type (:class:`~byzmtl.scalars.ExactScalars`) are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _moderate(cls, value: Any) -> Any:
        for where, number in _reals(value, ""):
            if abs(number) > LARGEST_SETTING:
                raise ValueError(
                    f"{number:g}{f' at {where}' if where else ''} is beyond +-"
                    f"{LARGEST_SETTING:g}, the largest magnitude of a setting"
                )
        return value


def _reals(value: Any, where: str) -> list[tuple[str, float]]:
    """The floats of a setting's value, with where they sit in it (``[0][1]``)."""
    if isinstance(value, float):
        return [(where, value)]
    if isinstance(value, list | tuple):
        return [found for i, item in enumerate(value) for found in _reals(item, f"{where}[{i}]")]
    return []


class CaseError(ValueError):
    """A case study cannot be built from its settings (the message names the setting)."""


GroupsSetting = list[int | str] | str | None
"""``task.groups``: one task group per agent, indexed by agent id, as a list of group names or
indices, or as the path of a text file with one group per line; None: the case's default."""


def assign_groups(
    spec: list[int | str] | str, names: Sequence[str], n_agents: int | None
) -> np.ndarray:
    """(N,) group index of every agent from a ``task.groups`` setting (see ``GroupsSetting``),
    for ``n_agents`` agents (None: as many as the setting lists); a wrong length or an unknown
    group is a :class:`CaseError` naming the agent."""
    source = "task.groups"
    if isinstance(spec, str):
        try:
            lines = Path(spec).read_text().splitlines()
        except OSError as error:
            raise CaseError(f"task.groups: cannot read {spec}: {error.strerror}") from None
        except UnicodeDecodeError as error:
            raise CaseError(
                f"task.groups: {spec} is not UTF-8 text (byte {error.start}: {error.reason})"
            ) from None
        entries: list[int | str] = [line.strip() for line in lines]
        entries = [e for e in entries if e and not str(e).startswith("#")]
        source = f"task.groups ({spec})"
    else:
        entries = list(spec)
    if n_agents is not None and len(entries) != n_agents:
        raise CaseError(f"{source}: {len(entries)} groups for {n_agents} agents (one per agent)")
    index = {name: g for g, name in enumerate(names)}
    out = np.empty(len(entries), dtype=np.int64)
    for k, entry in enumerate(entries):
        text = str(entry)
        if text in index:
            out[k] = index[text]
        elif text.isdigit() and int(text) < len(names) and not isinstance(entry, bool):
            out[k] = int(text)
        else:
            raise CaseError(
                f"{source}: agent {k} has unknown group {entry!r} "
                f"(groups: {', '.join(names)}, or 0..{len(names) - 1})"
            )
    return out


class PlannedSize(NamedTuple):
    """The size of a run as a case study's settings plan it, known before it is built."""

    agents: int
    rounds: int
    parameters: int  # per model


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
    """A case study: a task for the engine (it implements :class:`byzmtl.protocols.Task`) plus
    what the experiment layer needs to report it. It may offer the optional hooks of
    :mod:`byzmtl.protocols`: ``sender_losses`` (all-pairs scores on dense graphs),
    ``flip_labels`` (data poisoning, the ``label-flip`` attack), ``parameter_sizes``."""

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
    # the settings that decide the network's size and the number of rounds, named in errors
    # of a run too large for the machine (byzmtl.resources)
    agents_setting: ClassVar[str] = "task.agents"
    rounds_setting: ClassVar[str] = "task.iterations"

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

    # -- the engine's Task protocol (byzmtl.protocols.Task) ------------------------------------

    @abstractmethod
    def init_models(self, replicas: int) -> Tensor:
        """(R, N, d) initial models."""

    @abstractmethod
    def init_state(self, models: Tensor) -> dict[str, Tensor]:
        """Per-agent learner state (optimiser moments...), empty for plain steps."""

    @abstractmethod
    def batch(self, iteration: int) -> Any:
        """Every agent's data for this round."""

    @abstractmethod
    def adapt(
        self, models: Tensor, batch: Any, state: dict[str, Tensor], iteration: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """(R, N, d) -> psi after one local step, and the new learner state."""

    @abstractmethod
    def edge_losses(self, messages: Tensor, receivers: Tensor, batch: Any) -> Tensor:
        """(R, E, d) messages -> (R, E) loss of each message on its receiver's batch."""

    @abstractmethod
    def metrics(self, models: Tensor, batch: Any, iteration: int) -> dict[str, Tensor] | None:
        """Per-agent metrics (name -> (R, N)) to record after this round, or None."""

    @classmethod
    def planned_size(cls, settings: Any) -> PlannedSize | None:
        """The run's size from its settings alone, before anything is built (checked against
        the machine by :mod:`byzmtl.resources`); None where the data decide it."""
        return None

    @property
    def n_records(self) -> int:
        """How many records the metrics table gets (at most one per round by default)."""
        return self.n_rounds

    def default_byzantine(self, count: int) -> np.ndarray | None:
        """Byzantine agents the paper fixes for ``count`` attackers, or None for a random draw."""
        return None

    def time_values(self) -> np.ndarray:
        """The value of the time column for each recorded round."""
        return np.arange(1, self.n_rounds + 1)


CASES: Registry[CaseStudy] = Registry("case study")
