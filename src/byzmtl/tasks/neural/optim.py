"""Local steps for many agents at once: with gradient g = grad l_k(w_k) of agent k,

SGD   psi_k = w_k - lr * g;
Adam  m_k <- b1 m_k + (1 - b1) g,  v_k <- b2 v_k + (1 - b2) g^2,  t_k <- t_k + 1,
      psi_k = w_k - lr / (1 - b1^t_k) * m_k / (sqrt(v_k) / sqrt(1 - b2^t_k) + eps).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

OptimiserState = dict[str, Tensor]


class Optimiser(ABC):
    """A local step for many agents at once; its state is per (replica, agent)."""

    @abstractmethod
    def init_state(self, models: Tensor) -> OptimiserState:
        """The state of every agent of every replica before its first step."""

    @abstractmethod
    def step(
        self, params: Tensor, grads: Tensor, state: OptimiserState, agents: Tensor
    ) -> tuple[Tensor, OptimiserState]:
        """New parameters (R, L, P) of ``agents`` (L,) from their parameters and gradients
        (R, L, P); the state of the other agents is left as it is. ``state`` is not modified."""

    def apply(
        self, models: Tensor, grads: Tensor, state: OptimiserState, agents: Tensor
    ) -> tuple[Tensor, OptimiserState]:
        """All agents' models (R, N, P) after the step of ``agents`` (L,) with their gradients
        (R, L, P); the other agents' models are unchanged. ``models`` is not modified."""
        new, state = self.step(models.index_select(1, agents), grads, state, agents)
        return models.index_copy(1, agents, new), state


@dataclass(frozen=True)
class SGD(Optimiser):
    """Plain stochastic gradient descent: psi = w - lr * g."""

    lr: float

    def init_state(self, models: Tensor) -> OptimiserState:
        return {}

    def step(
        self, params: Tensor, grads: Tensor, state: OptimiserState, agents: Tensor
    ) -> tuple[Tensor, OptimiserState]:
        return params.sub(grads, alpha=self.lr), state

    def apply(
        self, models: Tensor, grads: Tensor, state: OptimiserState, agents: Tensor
    ) -> tuple[Tensor, OptimiserState]:
        return models.index_add(1, agents, grads, alpha=-self.lr), state


@dataclass(frozen=True)
class Adam(Optimiser):
    """Adam (Kingma and Ba), with the arithmetic of ``torch.optim.Adam``; every agent counts its
    own steps t_k for the bias corrections."""

    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def init_state(self, models: Tensor) -> OptimiserState:
        steps = torch.zeros(models.shape[1], dtype=torch.long, device=models.device)
        return {"m": torch.zeros_like(models), "v": torch.zeros_like(models), "t": steps}

    def step(
        self, params: Tensor, grads: Tensor, state: OptimiserState, agents: Tensor
    ) -> tuple[Tensor, OptimiserState]:
        beta1, beta2 = self.betas
        m = state["m"].index_select(1, agents).lerp_(grads, 1 - beta1)
        v = state["v"].index_select(1, agents).mul_(beta2).addcmul_(grads, grads, value=1 - beta2)
        t = state["t"].index_select(0, agents) + 1
        power = t.to(params.dtype)[None, :, None]
        step_size = self.lr / (1 - torch.pow(beta1, power))
        denominator = (v.sqrt() / (1 - torch.pow(beta2, power)).sqrt()).add_(self.eps)
        new = params - step_size * m / denominator
        return new, {
            "m": state["m"].index_copy(1, agents, m),
            "v": state["v"].index_copy(1, agents, v),
            "t": state["t"].index_copy(0, agents, t),
        }


def make_optimiser(name: str, lr: float) -> Optimiser:
    """``"sgd"`` or ``"adam"`` with learning rate ``lr`` (Adam's other settings: torch's)."""
    if name == "sgd":
        return SGD(lr)
    if name == "adam":
        return Adam(lr)
    raise ValueError(f"unknown optimiser {name!r} (known: adam, sgd)")
