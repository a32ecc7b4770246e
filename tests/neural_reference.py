"""A deliberately plain implementation of learning rounds, for tests only: one ``torch.nn.Module``
and one ``torch.optim`` optimiser per agent, one Python loop per agent and per neighbour, rules in
scalar arithmetic. Only the data schedule (which examples each agent gets in a round, and whether
it learns) is taken from the case study under test.

The round, for agent k with neighbours N_k (itself included) and its batch (x_k, y_k):
psi_k is one optimiser step on the mean cross-entropy l_k when k learns this round (else w_k);
m_lk = psi_l, or the attack's message when l is Byzantine; scores start at r0 and follow
r_lk <- (1 - nu) r_lk + nu s_lk, with s_lk = l_k(m_lk) (loss rule: only l with r_lk <= r_kk keep
a weight) or s_lk = ||m_lk - w_k||^2 (distance rule, no filter); c_lk = (1 / r_lk) / sum (1 / r)
over the kept neighbours; w_k = sum over N_k of c_lk m_lk. ``none`` keeps psi_k, ``average``
weighs N_k equally, and a Byzantine agent keeps its own model (paper-scaled: what it sent).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from byzmtl import rng


@dataclass
class Attack:
    """``scaled``: Byzantine l sends a * psi_l to k, a ~ U[0, scale) per (l, k, round).
    ``paper-scaled``: Byzantine l multiplies each parameter tensor of psi_l by its own
    a ~ U[0, scale) per round, sends the result to everyone and keeps it as its model."""

    byzantine: set[int]
    scale: float = 0.1
    trains: bool = True
    name: str = "scaled"


def _paper_scaled(net: nn.Module, vector: Tensor, key: np.ndarray, seed: int, i: int) -> Tensor:
    """``vector`` (a model of ``net``) with each parameter tensor scaled by its factor of round i
    (the factor drawn for the tensor's position among ``net.parameters()``)."""
    tensors = list(net.parameters())
    factors = rng.uniform(seed, "attack-paper-scaled", key, i, len(tensors))[0]
    pieces, start = [], 0
    for tensor, factor in zip(tensors, factors, strict=True):
        pieces.append(vector[start : start + tensor.numel()] * float(factor))
        start += tensor.numel()
    return torch.cat(pieces)


@torch.no_grad()
def _loss(probe: nn.Module, vector: Tensor, x: Tensor, y: Tensor) -> float:
    vector_to_parameters(vector, probe.parameters())
    return float(F.cross_entropy(probe(x), y))


@torch.no_grad()
def _accuracy(probe: nn.Module, vector: Tensor, x: Tensor, y: Tensor) -> float:
    vector_to_parameters(vector, probe.parameters())
    return float((probe(x).argmax(1) == y).double().mean())


def reference_run(
    case,  # a byzmtl.tasks.neural.NeuralCase
    data: list,  # its byzmtl.tasks.neural.AgentData, agent by agent
    neighbours: dict[int, list[int]],
    rule: str,
    optimiser: str,
    lr: float,
    rounds: int,
    attack: Attack | None = None,
    nu: float = 0.1,
    r0: float = 1.0,
    seed: int = 0,
) -> tuple[list[Tensor], list[dict[str, list[float]]]]:
    """Every agent's model after ``rounds`` rounds, and the metrics after each epoch."""
    n = case.n_agents
    byzantine = attack.byzantine if attack else set()
    start = case.init_models(1)[0]
    nets = [copy.deepcopy(case.model).train() for _ in range(n)]
    for k in range(n):
        vector_to_parameters(start[k].clone(), nets[k].parameters())
    make = torch.optim.Adam if optimiser == "adam" else torch.optim.SGD
    optimisers = [make(nets[k].parameters(), lr=lr) for k in range(n)]
    probe = copy.deepcopy(case.model)
    score = {(k, l): r0 for k in range(n) for l in neighbours[k]}
    history = []
    for i in range(rounds):
        batch = case.batch(i)
        x, y, learns = {}, {}, {}
        for group in batch.groups:
            learning = set(group.learning.tolist())
            for position, k in enumerate(group.agents.tolist()):
                x[k], y[k], learns[k] = group.x[position], group.y[position], position in learning
        previous = [parameters_to_vector(net.parameters()).detach().clone() for net in nets]
        for k in range(n):
            if learns[k]:
                optimisers[k].zero_grad()
                F.cross_entropy(nets[k](x[k]), y[k]).backward()
                optimisers[k].step()
        psi = [parameters_to_vector(net.parameters()).detach().clone() for net in nets]
        if attack is not None and not attack.trains:  # attackers that do not train keep w_b
            psi = [previous[k] if k in byzantine else psi[k] for k in range(n)]
        sent = {}  # paper-scaled: the one message of each attacker, which it keeps
        if attack is not None and attack.name == "paper-scaled":
            for b in byzantine:
                key = case.keys[b : b + 1]
                sent[b] = _paper_scaled(nets[b], psi[b], key, seed, i) * attack.scale
        new = []
        for k in range(n):
            if k in byzantine:
                new.append(sent.get(k, psi[k]))
                continue
            messages = {}
            for l in neighbours[k]:
                messages[l] = psi[l]
                if l in sent:
                    messages[l] = sent[l]
                elif l in byzantine:
                    assert attack is not None
                    pair = rng.pair_keys(np.array([case.keys[l]]), np.array([case.keys[k]]))
                    factor = attack.scale * rng.uniform(seed, "attack-scaled", pair, i, 1)[0, 0]
                    messages[l] = psi[l] * float(factor)
            if rule == "none":
                weights = {l: float(l == k) for l in neighbours[k]}
            elif rule == "average":
                weights = {l: 1.0 / len(neighbours[k]) for l in neighbours[k]}
            elif rule == "loss":
                for l in neighbours[k]:
                    loss = _loss(probe, messages[l], x[k], y[k])
                    score[k, l] = (1 - nu) * score[k, l] + nu * loss
                kept = [l for l in neighbours[k] if score[k, l] <= score[k, k]]
                total = sum(1.0 / score[k, l] for l in kept)
                weights = {
                    l: (1.0 / score[k, l] / total if l in kept else 0.0) for l in neighbours[k]
                }
            else:  # distance
                for l in neighbours[k]:
                    distance = float((messages[l] - previous[k]).square().sum())
                    score[k, l] = (1 - nu) * score[k, l] + nu * distance
                total = sum(1.0 / score[k, l] for l in neighbours[k])
                weights = {l: 1.0 / score[k, l] / total for l in neighbours[k]}
            new.append(sum(weights[l] * messages[l] for l in neighbours[k]))
        with torch.no_grad():
            for k in range(n):
                vector_to_parameters(new[k].clone(), nets[k].parameters())
        if batch.epoch_end:
            history.append(_metrics(data, case.dtype, probe, new))
    return new, history


def _metrics(
    data: list, dtype: torch.dtype, probe: nn.Module, models: list[Tensor]
) -> dict[str, list[float]]:
    """Every agent's loss on all its training examples, and loss and accuracy on its test set."""
    out: dict[str, list[float]] = {"train_loss": [], "test_loss": [], "accuracy": []}
    for agent, vector in zip(data, models, strict=True):
        train_x = torch.as_tensor(agent.x_train, dtype=dtype)
        train_y = torch.as_tensor(agent.y_train, dtype=torch.long)
        test_x = torch.as_tensor(agent.x_test, dtype=dtype)
        test_y = torch.as_tensor(agent.y_test, dtype=torch.long)
        out["train_loss"].append(_loss(probe, vector, train_x, train_y))
        out["test_loss"].append(_loss(probe, vector, test_x, test_y))
        out["accuracy"].append(_accuracy(probe, vector, test_x, test_y))
    return out
