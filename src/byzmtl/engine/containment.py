"""Containment: a normal agent's model stays finite whatever it receives. A local step or a
combination that yields a NaN or Inf coordinate is replaced by a finite fallback (the agent's
previous model, or its own step), and counted; only finite models are ever sent."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from byzmtl.ops import branches_freely


def keep_finite(values: Tensor, fallback: Tensor) -> tuple[Tensor, Tensor | None]:
    """``values`` (R, N, d) with every agent's row that holds a NaN or Inf replaced by its row
    of ``fallback``, and the (R, N) mask of replaced rows (None when none was). On the CPU one
    sum of all of ``values`` in the common case where every row is finite (a finite sum has no
    NaN or Inf term; a sum along the last dimension would cost ten times more at d = 2, and
    overflow only sends finite rows to the exact check); on an accelerator
    the replacement is always made (no host synchronisation), and the mask always returned."""
    if not branches_freely(values):
        bad = ~torch.isfinite(values).all(-1)
        return torch.where(bad[..., None], fallback, values), bad
    if math.isfinite(values.sum().item()):
        return values, None
    bad = ~torch.isfinite(values).all(-1)  # the sum may also overflow on finite rows
    if not bool(bad.any()):
        return values, None
    return torch.where(bad[..., None], fallback, values), bad


def count_contained(
    counts: Tensor | None, normal: Tensor, steps: Tensor | None, combinations: Tensor | None
) -> Tensor | None:
    """(R, 2) counts so far plus this round's rejected steps and combinations of ``normal``
    agents ((N,) bool; masks (R, N), None where nothing was rejected)."""
    if steps is None and combinations is None:
        return counts
    masks = [steps, combinations]
    replicas = next(m for m in masks if m is not None).shape[0]
    if counts is None:
        counts = torch.zeros((replicas, 2), dtype=torch.long, device=normal.device)
    added = [
        torch.zeros(replicas, dtype=torch.long, device=normal.device)
        if mask is None
        else (mask & normal).sum(1)
        for mask in masks
    ]
    return counts + torch.stack(added, 1)
