"""Case study 3 of the paper: digit classification with a CNN (non-convex).

Ten agents on a complete graph: agents 0-4 classify MNIST digits, agents 5-9 synthetic digits
(printed digits on random backgrounds, rendered by :mod:`byzmtl.datasets.synthetic_digits`, or a
copy of the original Synthetic Digits images given by ``synthetic_dir``); nobody knows who shares
its task. MNIST agent k trains on images k*2000 .. k*2000+1999 of the MNIST training set and is
tested on images k*400 .. k*400+399 of its test set, as in the authors' code; synthetic agents
take consecutive slices of the synthetic set the same way. As in the authors' code, MNIST pixels
are scaled to [0, 1] and synthetic ones to [-1, 1]. (This matters: with [0, 1] inputs the
synthetic agents' first steps barely lower their loss, and under attack the loss-based rule then
accepts the attackers' near-zero model, whose uniform predictions score log 10, better than an
untrained model; the synthetic agents collapse with it. See benchmarks/RESULTS.md.)

Every agent learns the paper's CNN (:func:`paper_cnn`) with Adam (learning rate 1e-3), batches
of 64 (MNIST) and 128 (synthetic), for 100 epochs (an epoch is 16 rounds, the synthetic agents'
batches: see :mod:`byzmtl.tasks.neural`). Less data: by k mod 5 an agent takes its local step with
probability 1/2, 1/3, 1/4, 1/4 or 1. Scores use nu = 0.05 and r0 = 1. With two attackers the
Byzantine agents are 2 and 7 (one per group); the default attack is the authors' scaled-model
attack (``paper-scaled``): the attackers do not train, and every round scale their model by a
random factor in [0, 0.1) per parameter tensor, send it to everyone and keep it as their model.

``train_loss`` is measured on the first 400 training images of each agent (``eval_train``).

A demo that learns in about two minutes on one CPU core: ``configs/digits-demo.toml`` (1000
training and 200 test images per agent, batches of 16, Adam 2e-3, 3 epochs). Smaller settings
(a few hundred images, an epoch or two) only check that a run completes: they end near chance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from byzmtl.datasets import DatasetError, download_mnist, load_mnist, load_synthetic_digits
from byzmtl.tasks.base import CASES, CaseDefaults, CaseError, GroupsSetting, assign_groups
from byzmtl.tasks.neural import AgentData, NeuralCase, NeuralSettings, cyclic, make_optimiser


class DigitsSettings(NeuralSettings):
    """Settings of the digit classification case study (the paper's values by default)."""

    data_dir: str = Field("data/mnist", description="folder of the four MNIST IDX files")
    synthetic_dir: str | None = Field(
        None, description="folder of real Synthetic Digits images (default: render them)"
    )
    download: bool = Field(False, description="fetch MNIST into data_dir if it is missing")
    synthetic_seed: int = Field(0, ge=0, description="seed of the rendered synthetic digits")
    mnist_agents: int | None = Field(
        None, ge=0, description="agents classifying MNIST (default 5, or as task.groups says)"
    )
    synthetic_agents: int | None = Field(
        None, ge=0, description="agents classifying synthetic digits (default 5, or as groups)"
    )
    groups: GroupsSetting = Field(
        None,
        description="the task of each agent by id, 'mnist' or 'synthetic' (a list, or a file "
        "with one per line); default: agents 0..mnist_agents-1 MNIST, then synthetic",
    )
    train_per_agent: int = Field(2000, ge=1, description="training images per agent")
    test_per_agent: int = Field(400, ge=1, description="test images per agent")
    mnist_batch: int = Field(64, ge=1, description="batch size of MNIST agents")
    synthetic_batch: int = Field(128, ge=1, description="batch size of synthetic agents")
    epochs: int = Field(100, ge=1, description="passes over the data (see tasks.neural)")
    optimizer: Literal["sgd", "adam"] = Field("adam", description="local step")
    lr: float = Field(1e-3, gt=0, description="learning rate of the local step")
    step_probability: list[float] = Field(
        [1 / 2, 1 / 3, 1 / 4, 1 / 4, 1.0],
        min_length=1,
        description="agent k takes its local step with probability step_probability[k mod len]",
    )
    eval_train: int | None = Field(
        400, ge=1, description="training images per agent that train_loss is measured on"
    )

    @model_validator(mode="after")
    def _some_agents(self) -> DigitsSettings:
        if self.groups is None and self.mnist_agents == 0 and self.synthetic_agents == 0:
            raise ValueError("digits needs at least one MNIST or synthetic agent")
        return self


GROUP_NAMES = ["mnist", "synthetic"]


def agent_groups(settings: DigitsSettings) -> np.ndarray:
    """(N,) 0 (MNIST) or 1 (synthetic digits) for every agent, by id: ``task.groups``, which
    ``mnist_agents`` and ``synthetic_agents`` must then agree with, or agents 0..m-1 on MNIST
    and the next s on synthetic digits (m = s = 5 by default)."""
    counts = (settings.mnist_agents, settings.synthetic_agents)
    if settings.groups is None:
        return np.repeat([0, 1], [5 if c is None else c for c in counts])
    groups = assign_groups(settings.groups, GROUP_NAMES, None)
    fields = ("mnist_agents", "synthetic_agents")
    for g, (field, count) in enumerate(zip(fields, counts, strict=True)):
        found = int(np.count_nonzero(groups == g))
        if count is not None and count != found:
            raise CaseError(
                f"task.{field}: {count}, but task.groups has {found} {GROUP_NAMES[g]} agents"
            )
    if not len(groups):
        raise CaseError("task.groups: digits needs at least one agent")
    return groups


def paper_cnn() -> nn.Sequential:
    """The paper's CNN: 3 x [conv 3x3 (32, 64, 64 channels, padding 1), ReLU, max-pool 2], then
    576 -> 128 -> ReLU -> 10, for 1 x 28 x 28 images."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 3 * 3, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def _split(
    images: np.ndarray,
    labels: np.ndarray,
    agents: int,
    per_agent: int,
    source: str,
    centred: bool = False,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Consecutive slices of ``per_agent`` images, one per agent, scaled to [0, 1], or to
    [-1, 1] when ``centred``."""
    needed = agents * per_agent
    if len(images) < needed:
        raise DatasetError(
            f"{source}: expected at least {needed} images ({agents} agents x {per_agent}), "
            f"found {len(images)}"
        )
    x = images[:needed].reshape(agents, per_agent, 1, *images.shape[1:]).astype(np.float32)
    x = x / 127.5 - 1.0 if centred else x / 255.0
    return list(zip(x, labels[:needed].reshape(agents, per_agent), strict=True))


def load(settings: DigitsSettings, groups: np.ndarray) -> list[AgentData]:
    """Every agent's images by id: the j-th MNIST agent (in id order) takes the j-th slice of
    MNIST, the j-th synthetic agent the j-th slice of the synthetic digits."""
    data: list[AgentData | None] = [None] * len(groups)
    mnist_ids, synthetic_ids = np.flatnonzero(groups == 0), np.flatnonzero(groups == 1)
    if len(mnist_ids):
        try:
            mnist = [load_mnist(settings.data_dir, split) for split in ("train", "test")]
        except DatasetError:
            if not settings.download:
                raise
            download_mnist(settings.data_dir)
            mnist = [load_mnist(settings.data_dir, split) for split in ("train", "test")]
        source, m = f"{settings.data_dir} (MNIST)", len(mnist_ids)
        train = _split(*mnist[0], m, settings.train_per_agent, source)
        test = _split(*mnist[1], m, settings.test_per_agent, source)
        for k, a, b in zip(mnist_ids, train, test, strict=True):
            data[k] = AgentData(*a, *b)
    if len(synthetic_ids):
        s = len(synthetic_ids)
        synthetic = load_synthetic_digits(
            s * settings.train_per_agent,
            s * settings.test_per_agent,
            seed=settings.synthetic_seed,
            source_dir=settings.synthetic_dir,
        )
        source = str(Path(settings.synthetic_dir)) if settings.synthetic_dir else "synthetic digits"
        train = _split(
            synthetic.x_train, synthetic.y_train, s, settings.train_per_agent, source, True
        )
        test = _split(synthetic.x_test, synthetic.y_test, s, settings.test_per_agent, source, True)
        for k, a, b in zip(synthetic_ids, train, test, strict=True):
            data[k] = AgentData(*a, *b)
    return [d for d in data if d is not None]


@CASES.register("digits")
class DigitClassification(NeuralCase):
    """The paper's CNN on MNIST (agents 0-4) and synthetic digits (agents 5-9): case study 3."""

    description = "CNN: 5 agents classify MNIST, 5 synthetic digits; nobody knows who is who"
    settings_model = DigitsSettings
    defaults = CaseDefaults(
        attack="paper-scaled",
        attack_params={"scale": 0.1, "trains": False},
        nu=0.05,
        r0=1.0,
        dtype="float32",
        graph={"kind": "complete"},
    )
    plot_groups = True
    agents_setting = "task.mnist_agents"  # and task.synthetic_agents

    @classmethod
    def from_settings(
        cls,
        settings: DigitsSettings,
        seed: int,
        dtype: torch.dtype = torch.float32,
        device: str = "cpu",
    ) -> DigitClassification:
        groups = agent_groups(settings)
        batches = np.where(groups == 0, settings.mnist_batch, settings.synthetic_batch)
        return cls(
            paper_cnn(),
            load(settings, groups),
            seed=seed,
            optimiser=make_optimiser(settings.optimizer, settings.lr),
            epochs=settings.epochs,
            batch_size=batches.tolist(),
            step_probability=cyclic(settings.step_probability, len(groups)),
            groups=groups,
            group_names=GROUP_NAMES,
            eval_train=settings.eval_train,
            dtype=dtype,
            device=device,
        )

    def default_byzantine(self, count: int) -> np.ndarray | None:
        """Two attackers: the middle agent of each group (agents 2 and 7 in the paper)."""
        members = [np.flatnonzero(self.groups == g) for g in (0, 1)]
        if count != 2 or not all(len(m) for m in members):
            return None
        return np.sort([m[len(m) // 2] for m in members])
