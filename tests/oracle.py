"""A deliberately plain implementation of one round of target localization, with one Python loop
per agent and per neighbour, floats and lists only. The vectorised engine must agree with it;
nothing here is shared with the engine except the data stream. The round, for agent k with
neighbours N_k (itself included), forgetting factor nu and scores r_lk starting at r0:

    psi_k = w_k + mu (q_k - w_k)                       local step towards its sample's q_k
    m_lk  = psi_l, or the attack's message when l is Byzantine
    none:     w_k = psi_k;    average:  w_k = mean over N_k of m_lk
    distance: r_lk <- (1 - nu) r_lk + nu ||m_lk - w_k||^2,     c_lk = (1 / r_lk) / sum (1 / r)
    loss:     r_lk <- (1 - nu) r_lk + nu (b_k - u_k^T m_lk)^2, kept: r_lk <= r_kk,
              c_lk = (1 / r_lk) / sum over kept (1 / r), 0 for the others
    w_k = sum over N_k of c_lk m_lk;  a Byzantine agent keeps w_b = psi_b.
"""

from __future__ import annotations

import math

import numpy as np

from byzmtl import rng


def fake_estimate(seed: int, key: int, value: float, spread: float) -> list[float]:
    """The constant attack's message of the attacker with key ``key``: the fixed fake estimate
    value + spread * U[0, 1) in each of the two coordinates (15 + U[0, 1) by default)."""
    draws = rng.uniform(seed, "attack-constant", np.array([key], dtype=np.uint64), 0, 2)[0]
    return [value + spread * float(x) for x in draws]


def scale_factor(
    seed: int, sender_key: int, receiver_key: int, iteration: int, scale: float
) -> float:
    pair = rng.pair_keys(np.array([sender_key]), np.array([receiver_key]))
    return scale * float(rng.uniform(seed, "attack-scaled", pair, iteration, 1)[0, 0])


def run_oracle(
    *,
    rule: str,
    neighbours: dict[int, list[int]],
    start: list[list[float]],
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    mu: float,
    nu: float,
    r0: float,
    byzantine: set[int],
    attack: str,
    attack_params: dict[str, float],
    seed: int,
    keys: np.ndarray,
) -> list[list[list[float]]]:
    """Models of every agent after each iteration. ``samples[i]`` = (u (N,2), b (N,), q (N,2)):
    the regressor, d + u^T x_k and the local step's target x_k + d u of every agent."""
    n = len(start)
    w = [list(p) for p in start]
    score = {(k, l): r0 for k in range(n) for l in neighbours[k]}
    history = []
    for i, (u, b, q) in enumerate(samples):
        psi = [[w[k][j] + mu * (q[k][j] - w[k][j]) for j in range(2)] for k in range(n)]
        new = []
        for k in range(n):
            if k in byzantine:
                new.append(psi[k])
                continue
            messages = {}
            for l in neighbours[k]:
                if l not in byzantine:
                    messages[l] = psi[l]
                elif attack == "constant":
                    messages[l] = fake_estimate(seed, int(keys[l]), **attack_params)
                elif attack == "scaled":
                    a = scale_factor(seed, int(keys[l]), int(keys[k]), i, attack_params["scale"])
                    messages[l] = [a * x for x in psi[l]]
                else:
                    raise ValueError(attack)
            weights = {}
            if rule == "none":
                weights = {l: (1.0 if l == k else 0.0) for l in neighbours[k]}
            elif rule == "average":
                weights = {l: 1.0 / len(neighbours[k]) for l in neighbours[k]}
            elif rule == "distance":
                for l in neighbours[k]:
                    distance = sum((messages[l][j] - w[k][j]) ** 2 for j in range(2))
                    score[k, l] = (1 - nu) * score[k, l] + nu * distance
                total = sum(1.0 / score[k, l] for l in neighbours[k])
                weights = {l: (1.0 / score[k, l]) / total for l in neighbours[k]}
            elif rule == "loss":
                for l in neighbours[k]:
                    loss = (b[k] - sum(u[k][j] * messages[l][j] for j in range(2))) ** 2
                    score[k, l] = (1 - nu) * score[k, l] + nu * loss
                kept = [l for l in neighbours[k] if score[k, l] <= score[k, k]]
                total = sum(1.0 / score[k, l] for l in kept)
                weights = {
                    l: (1.0 / score[k, l]) / total if l in kept else 0.0 for l in neighbours[k]
                }
            else:
                raise ValueError(rule)
            assert math.isclose(sum(weights.values()), 1.0, rel_tol=1e-12)
            new.append([sum(weights[l] * messages[l][j] for l in neighbours[k]) for j in range(2)])
        w = new
        history.append([list(p) for p in w])
    return history
