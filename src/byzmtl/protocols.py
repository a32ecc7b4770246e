"""What the engine needs from a case study: the ``Task`` protocol, and the optional hooks a task
may offer (each a protocol of its own, checked with ``isinstance``). Case studies
(:class:`byzmtl.tasks.CaseStudy`) implement ``Task``; attacks check the hooks they need."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class Task(Protocol):
    """A case study as the engine runs it (see :mod:`byzmtl.tasks`)."""

    n_agents: int
    n_rounds: int
    metric_names: tuple[str, ...]

    def init_models(self, replicas: int) -> Tensor:
        """(R, N, d) initial models."""
        ...

    def init_state(self, models: Tensor) -> dict[str, Tensor]:
        """Per-agent learner state (optimiser moments...), empty for plain steps."""
        ...

    def batch(self, iteration: int) -> Any:
        """Every agent's data for this round."""
        ...

    def adapt(
        self, models: Tensor, batch: Any, state: dict[str, Tensor], iteration: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """(R, N, d) -> psi after one local step, and the new learner state."""
        ...

    def edge_losses(self, messages: Tensor, receivers: Tensor, batch: Any) -> Tensor:
        """(R, E, d) messages -> (R, E) loss of each message on its receiver's batch, as a new
        tensor (the engine modifies it in place)."""
        ...

    def metrics(self, models: Tensor, batch: Any, iteration: int) -> dict[str, Tensor] | None:
        """Per-agent metrics (name -> (R, N)) to record after this round, or None."""
        ...


@runtime_checkable
class SenderLosses(Protocol):
    """A task that scores every model on every agent's batch at once, used on dense graphs
    (|E| >= N^2 / 2, self-loops included)."""

    def sender_losses(self, models: Tensor, batch: Any) -> Tensor | None:
        """(R, N, N) losses l_k(w_l) of every agent l's model (models (R, N, d)) on every agent
        k's batch, at [r, k, l]; None when the task has no faster way than edge by edge."""
        ...


@runtime_checkable
class LabelFlipping(Protocol):
    """A task whose data an attacker can poison (the ``label-flip`` attack)."""

    def flip_labels(self, batch: Any, agents: Tensor) -> Any:
        """A copy of ``batch`` in which the agents flagged in ``agents`` ((N,) bool) have
        flipped labels; ``batch`` itself is left unchanged."""
        ...


@runtime_checkable
class ParameterTensors(Protocol):
    """A task whose flat models are made of several parameter tensors (a neural network)."""

    parameter_sizes: tuple[int, ...]  # the lengths of the tensors, in order, summing to d


@runtime_checkable
class Restrictable(Protocol):
    """A task that can be cut to some of its agents, for a rank of a partitioned run
    (:mod:`byzmtl.engine.partition`): ``restricted(agents)`` is the task of the agents with
    those ids (sorted), agent ``agents[j]`` becoming agent j. Its batches, local steps, edge
    losses, metrics and initial models of those agents must equal, bit for bit, the whole
    task's rows of those agents (per-agent randomness keyed on the agents' identities, and
    per-agent arithmetic only)."""

    def restricted(self, agents: Any) -> Any:
        """The task of ``agents`` ((n,) int64, sorted) only; a case study's is the same kind of
        case study (a partitioned run's rank keeps it in place of the whole one)."""
        ...
