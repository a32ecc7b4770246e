"""The cross-entropy of logits, as a loss and as a sound score of a received model."""

from __future__ import annotations

import torch
from torch import Tensor

from byzmtl.ops import branches_freely


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """CE(z, y) = log sum_c exp(z_c - z_y) for every example: logits (..., C), labels (...).

    The label's logit is subtracted before the sum, never after: log sum_c exp(z_c) - z_y
    cancels to 0 once |z| is so large that log C is below its rounding error (a constant model
    with logits near 1e20 would then score 0, the best possible loss). This form is exact up to
    rounding for any finite logits and never negative (the term c = y is exp(0) = 1); it is +inf
    (never NaN) when a logit or a difference of logits overflows, and such a loss marks a model
    that cannot be scored. (``torch.logsumexp`` is several times faster than ``log_softmax``
    for a few classes.)"""
    label_logit = logits.gather(-1, labels.unsqueeze(-1))
    return torch.nan_to_num(torch.logsumexp(logits - label_logit, -1), nan=torch.inf)


SOUND_LOGIT_ERROR = 1e-3
"""The largest rounding error a score may carry: logits z are rounded to |z| * eps, so a loss
computed from logits with max |z| > SOUND_LOGIT_ERROR / eps (about 8e3 in float32, 4.5e12 in
float64) is uncertain by more than a thousandth of a nat."""


def score_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """The cross-entropy of a received model's logits, as a score: ``cross_entropy``, and +inf
    where the logits are too large for it to be sound (see ``SOUND_LOGIT_ERROR``). Such a model
    is unscorable: far from classifying better, it has lost all precision below its scale,
    and an agent that mixed it into its own model would lose its own with it."""
    limit = SOUND_LOGIT_ERROR / torch.finfo(logits.dtype).eps
    loss = cross_entropy(logits, labels)
    if branches_freely(logits):  # the common case in one reduction over all logits: no row is
        low, high = torch.aminmax(logits)  # too large (a row-wise maximum over a few classes
        if -limit <= low.item() and high.item() <= limit:  # costs ten times more)
            return loss
    too_large = torch.linalg.vector_norm(logits, ord=float("inf"), dim=-1) > limit
    return loss.masked_fill_(too_large, torch.inf)
