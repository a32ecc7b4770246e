"""Add your own rule and attack, then compare them with the paper's rules.

    python examples/custom_rule.py                       # through the Python API
    byzmtl run target-localization --plugin examples/custom_rule.py \
        --rules softmin,loss,none --attack shifted --attackers 20   # through the command line

A weight rule returns one non-negative affinity per edge; the engine normalises them per receiver
and combines. An attack returns the message of every edge whose sender is Byzantine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from annotated_types import Gt
from torch import Tensor

import byzmtl
from byzmtl.attacks import ATTACKS, Attack, AttackInputs
from byzmtl.rules import RULES, Neighbourhoods, RuleInputs, RuleState, WeightRule


@RULES.register("softmin")
@dataclass
class SoftMin(WeightRule):
    """Weights by a softmin of accumulated losses: r_lk <- (1-nu) r_lk + nu l_k(psi_l),
    c_lk proportional to exp(-(r_lk - r_kk) / temperature), no filter."""

    nu: float = 0.1
    r0: float = 10.0
    temperature: Annotated[float, Gt(0)] = 0.05  # checked by RULES.create, as every hint
    needs_losses = True

    def init_state(self, edges: Neighbourhoods, dtype: torch.dtype) -> RuleState:
        device = edges.receivers.device
        return RuleState(
            edges={"r": torch.full((edges.n_edges,), self.r0, dtype=dtype, device=device)}
        )

    def affinities(self, x: RuleInputs, state: RuleState) -> tuple[Tensor, RuleState]:
        r = (1 - self.nu) * state.edges["r"] + self.nu * x.losses
        gap = (r - r[x.edges.receiver_self_edge]).clamp_min(0)  # own edge: gap 0, weight 1
        return torch.exp(-gap / self.temperature), RuleState(edges={"r": r})


@ATTACKS.register("shifted")
@dataclass
class Shifted(Attack):
    """Send the attacker's own model shifted by a constant vector: m = psi_b + offset."""

    offset: float = 3.0
    trains: bool = True

    def messages(self, x: AttackInputs) -> Tensor:
        return x.psi[:, x.senders] + self.offset


if __name__ == "__main__":
    result = byzmtl.run(
        {
            "case": "target-localization",
            "rules": ["softmin", "loss", "none"],
            "attack": "shifted",
            "attackers": 20,
            "task": {"iterations": 300},
        }
    )
    for rule in result.config.rules:
        print(
            f"{rule:8s} final loss {result.final(rule, 'loss'):.4f}  "
            f"msd {result.final(rule, 'msd'):.4f}"
        )
