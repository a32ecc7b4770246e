"""Send: what every receiver hears in one round. Honest agents send their psi; the attack gives
the Byzantine senders' messages, edge by edge or one broadcast per sender, and may set the
Byzantine agents' own next models. Non-finite messages are zeroed and flagged, never combined."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from byzmtl.attacks.base import Attack, AttackContext, AttackInputs
from byzmtl.ops import branches_freely
from byzmtl.protocols import Task


class AttackOutputError(TypeError):
    """An attack returned something other than a floating-point tensor of the expected shape
    and of a dtype the run's holds exactly."""


def checked(
    value: object, shape: tuple[int, ...], dtype: torch.dtype, what: str, axes: str
) -> Tensor:
    """``value`` if it is a real floating-point tensor of ``shape`` (named ``axes`` in the
    error message) whose dtype converts exactly to the run's ``dtype`` (float32 messages in a
    float64 run, not the reverse, which would round them), else :class:`AttackOutputError`.
    The one place where the engine checks what an attack returns."""
    if (
        not isinstance(value, Tensor)
        or tuple(value.shape) != shape
        or not value.is_floating_point()
        or torch.promote_types(value.dtype, dtype) != dtype
    ):
        got = f"{type(value).__name__}"
        if isinstance(value, Tensor):
            got = f"a {value.dtype} tensor of shape {tuple(value.shape)}"
        raise AttackOutputError(
            f"attack {what} must return a real tensor of shape {axes} = {shape} and dtype "
            f"{dtype} (or a narrower float), got {got}"
        )
    return value


@dataclass(frozen=True, eq=False)
class Heard:
    """What the receivers hear in one round."""

    psi: Tensor  # (R, N, d) the models heard from each sender (a broadcast replaces its rows,
    #   zeroed where not finite)
    attack: Tensor | None  # (R, B, d) per-edge attack messages (non-finite ones zeroed)
    finite: Tensor | None  # (R, B) each attacked edge's message was finite; None: all were
    own: Tensor | None  # (R, n_b, d) the Byzantine agents' own next models, if the attack sets them


def send(attack: Attack, context: AttackContext, inputs: AttackInputs, n_edges: int) -> Heard:
    """Ask ``attack`` for this round's messages on the ``n_edges`` attacked edges."""
    psi, name = inputs.psi, attack.name
    per_agent = (psi.shape[0], context.byzantine_ids.numel(), psi.shape[2])
    broadcast = attack.broadcast(inputs)
    if broadcast is not None:
        what = f"{name}.broadcast"
        broadcast = checked(broadcast, per_agent, psi.dtype, what, "(R, n_b, d)").to(psi.dtype)
        sent = broadcast.index_select(1, context.sender_rank)
    else:
        per_edge = (psi.shape[0], n_edges, psi.shape[2])
        what = f"{name}.messages"
        sent = checked(attack.messages(inputs), per_edge, psi.dtype, what, "(R, B, d)")
    own = attack.own_models(inputs, sent)
    if own is not None:
        own = checked(own, per_agent, psi.dtype, f"{name}.own_models", "(R, n_b, d)").to(psi.dtype)
    sent = sent.to(psi.dtype)
    # on the CPU, skip the masks when every message is finite (checked with one reduction)
    checked_finite = branches_freely(sent) and math.isfinite(float(sent.sum()))
    if broadcast is not None:  # heard like honest models: scored on all pairs at once
        if checked_finite:
            return Heard(psi.index_copy(1, context.byzantine_ids, broadcast), None, None, own)
        rows = torch.isfinite(broadcast).all(-1)
        zeroed = broadcast.masked_fill(~rows[..., None], 0.0)
        heard = psi.index_copy(1, context.byzantine_ids, zeroed)
        return Heard(heard, None, rows.index_select(1, context.sender_rank), own)
    if checked_finite:
        return Heard(psi, sent, None, own)
    finite = torch.isfinite(sent).all(-1)
    return Heard(psi, sent.masked_fill(~finite[..., None], 0.0), finite, own)


def attack_inputs(
    context: AttackContext, task: Task, iteration: int, psi: Tensor, previous: Tensor, batch: Any
) -> AttackInputs:
    """The round as the attackers see it, with ``loss_of`` scoring candidate messages on the
    attacked edges' receivers' batches."""

    def loss_of(candidates: Tensor) -> Tensor:
        return task.edge_losses(candidates, context.receivers, batch)

    return AttackInputs(context, iteration, psi, previous, loss_of)
