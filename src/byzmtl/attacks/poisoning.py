"""Data poisoning: the attacker follows the protocol, but on corrupted data.

``label-flip``: each Byzantine agent takes its local steps on its own data with the labels flipped
and sends the model it obtains, unchanged, to everyone: m_bk = psi_b, where
psi_b = local step of w_b on flip(batch_b). Nothing in the message is malformed; only its
training data was wrong.

The case study says what flipping means through an optional hook on the task (the engine's
``Task``; case studies are :class:`byzmtl.tasks.CaseStudy`):

    def flip_labels(self, batch, agents: Tensor) -> batch

returns ``batch`` with the labels of the agents where ``agents`` ((N,) bool) is True replaced by
flipped ones, the others untouched; it must not modify ``batch`` in place. What a case study does:

- target localization (regression): the observation d is negated, d -> -d, so the attacker
  learns the mirror image of its target through its own position, x_k - (w0_k - x_k);
- classification (``har``, ``digits``, any case built on ``byzmtl.tasks.neural``): the standard flip
  of C classes, y -> C - 1 - y, on the flagged agents' training batches.

A case study without the hook cannot run this attack: the run stops before the first round with
an error that names the case study.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from torch import Tensor

from byzmtl.attacks.base import (
    ATTACKS,
    Attack,
    AttackAssumptionError,
    AttackContext,
    AttackInputs,
)
from byzmtl.protocols import LabelFlipping


@ATTACKS.register("label-flip")
@dataclass
class LabelFlip(Attack):
    """Train on flipped labels (the task's ``flip_labels`` hook) and send the model: m_bk = psi_b.
    The attacker always trains (``trains`` must stay True)."""

    trains: Literal[True] = True  # it trains on its flipped data
    neighbourhood_only: ClassVar[bool] = True

    def check(self, context: AttackContext, task: Any) -> None:
        if not isinstance(task, LabelFlipping):
            name = getattr(task, "name", type(task).__name__)
            raise AttackAssumptionError(
                f"label-flip needs a case study that defines flip_labels(batch, agents) "
                f"(byzmtl.protocols.LabelFlipping); {name!r} does not"
            )

    def training_batch(self, task: Any, batch: Any, byzantine: Tensor) -> Any:
        return task.flip_labels(batch, byzantine)

    def messages(self, x: AttackInputs) -> Tensor:
        """(R, B, d): the attacker's own model, trained on flipped labels."""
        return x.psi[:, x.senders]
