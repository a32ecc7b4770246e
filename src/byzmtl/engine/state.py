"""What a run carries from round to round (``SimState``), and what a round reports besides it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from byzmtl.rules.base import RuleState


@dataclass
class SimState:
    """Everything a run needs to continue, bit for bit (see ``save`` and ``load``)."""

    iteration: int
    models: Tensor  # (R, N, d)
    rule_states: list[RuleState]
    task_state: dict[str, Tensor] = field(default_factory=dict)
    # (R, 2) long: normal agents' rejected local steps and rejected combinations so far
    contained: Tensor | None = None

    def as_dict(self) -> dict[str, Any]:
        """The state as plain tensors, lists and numbers (what ``torch.save`` with
        ``weights_only`` loading accepts); :meth:`from_dict` inverts it."""
        return {**self.__dict__, "rule_states": [state.as_dict() for state in self.rule_states]}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> SimState:
        """The state :meth:`as_dict` described."""
        rule_states = [RuleState.from_dict(s) for s in record["rule_states"]]
        return cls(**{**record, "rule_states": rule_states})

    def save(self, path: str | Path) -> None:
        """Checkpoint the state (written to a temporary file, then renamed)."""
        path = Path(path)
        temporary = path.with_name(f".{path.name}.tmp")
        torch.save(self.as_dict(), temporary)
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> SimState:
        """A state saved by :meth:`save`; continuing from it reproduces the uninterrupted run."""
        return cls.from_dict(torch.load(path, map_location=device, weights_only=True))


@dataclass(frozen=True, eq=False)
class RoundOutput:
    """What one round produced besides the new state (for recording)."""

    metrics: dict[str, Tensor] | None  # name -> (R, N) (a partitioned run: (R, N_r), the
    #   rank's own agents)
    weights: list[Tensor | None]  # per rule, (E,) edge weights where defined (a partitioned
    #   run: of the rank's edges only)
    shared: list[Any] | None = None  # a partitioned run: every rank's ``round_summary``
