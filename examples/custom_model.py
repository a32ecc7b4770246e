"""Plug in your own model and dataset: any torch.nn.Module, any per-agent data (a few seconds).

    python examples/custom_model.py
    byzmtl run points --plugin examples/custom_model.py --byzantine 5 --epochs 10

Eight agents classify 2-d points into 3 classes. Agents 0-3 share one task; agents 4-7 another,
whose class centres are rotated, so averaging the two groups' models hurts both. Even agents learn
from one batch in ten only (less data): alone they lag; the loss-based rule lets them borrow from
the agents that share their task. Agent 5 is Byzantine and sends a scaled-down copy of its model.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from torch import nn

import byzmtl
from byzmtl.tasks import CASES, CaseDefaults
from byzmtl.tasks.neural import AgentData, NeuralCase, NeuralSettings, cyclic, make_optimiser


class PointsSettings(NeuralSettings):
    """The [task] table of a run (validated; written back to config.toml)."""

    epochs: int = 5
    lr: float = 0.1
    step_probability: list[float] = Field([0.1, 1.0], min_length=1)  # agent k: [k mod 2]


def points(agent: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n points of 3 classes around centres that agents 4-7 see rotated by 120 degrees."""
    draw = np.random.default_rng(agent)
    angles = 2 * np.pi / 3 * (np.arange(3) + (agent >= 4))
    labels = draw.integers(0, 3, n)
    x = 2 * np.stack([np.cos(angles), np.sin(angles)], 1)[labels] + draw.normal(size=(n, 2))
    return x.astype(np.float32), labels


@CASES.register("points")
class Points(NeuralCase):
    description = "example: 8 MLPs on two groups of 2-d point clouds"
    settings_model = PointsSettings
    defaults = CaseDefaults(attack="scaled", nu=0.1, r0=1.0, dtype="float32")
    plot_groups = True

    @classmethod
    def from_settings(
        cls, settings: PointsSettings, seed: int, dtype: torch.dtype, device: str
    ) -> Points:
        data = []
        for k in range(8):
            x, y = points(k, 240)
            data.append(AgentData(x[:40], y[:40], x[40:], y[40:]))  # train, test
        return cls(
            nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3)),
            data,
            seed=seed,
            optimiser=make_optimiser(settings.optimizer, settings.lr),
            epochs=settings.epochs,
            batch_size=10,
            step_probability=cyclic(settings.step_probability, 8),
            groups=[0] * 4 + [1] * 4,
            group_names=["task-a", "task-b"],
            dtype=dtype,
            device=device,
        )


if __name__ == "__main__":
    result = byzmtl.run({"case": "points", "byzantine": [5]})
    for rule in result.config.rules:
        print(
            f"{rule:8s} accuracy {result.final(rule, 'accuracy'):.3f}"
            f" (worst normal agent {result.final(rule, 'accuracy', 'worst'):.3f})"
        )
    result.save("runs/custom-model", overwrite=True)  # config.toml, metrics.csv, figures, ...
