"""Case study 2 of the paper: human activity recognition (UCI HAR, multinomial logistic regression).

One agent per volunteer (30 in UCI HAR), each its own task, on a complete graph. Agent k merges
its subject's rows of both original splits, shuffles them (keyed on (seed, agent)) and keeps the
first ``train_fraction`` (75%) for training, the rest for testing. Every agent learns
Linear(F -> C) with cross-entropy, F the number of lines of features.txt (561) and C that of
activity_labels.txt (6): SGD, learning rate 0.01, batches of 10, 50 epochs. Agents with
k mod 3 == 0 take their local step with probability 1/11 only (less data).

Scores use r0 = 1 and the supplement's nu = 0.05; the authors' code used nu = 0.001
(``--nu 0.001``). The default attack is the authors' scaled-model attack (``paper-scaled``):
every round a Byzantine agent takes its local step, scales its model by a random factor in
[0, 0.1) per parameter tensor, sends it to everyone and keeps it as its own model, so that its
model shrinks geometrically towards zero. With 29 attackers only agent 4 stays normal, as in the
paper.

Reduced setting for demos and tests: ``--epochs 3`` (and ``--agents 10``: the first 10 subjects).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from byzmtl import rng
from byzmtl.datasets import DatasetError, HarDataset, download_har, load_har
from byzmtl.tasks.base import CASES, CaseDefaults
from byzmtl.tasks.neural import AgentData, NeuralCase, NeuralSettings, cyclic, make_optimiser


class HarSettings(NeuralSettings):
    """Settings of the human activity recognition case study (the paper's values by default)."""

    data_dir: str = Field(
        "data/har", description="the 'UCI HAR Dataset' folder, or the folder that holds it"
    )
    download: bool = Field(False, description="fetch UCI HAR into data_dir if it is missing")
    agents: int | None = Field(None, ge=1, description="use the first `agents` subjects only")
    epochs: int = Field(50, ge=1, description="passes over the data (see tasks.neural)")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="local step")
    lr: float = Field(0.01, gt=0, description="learning rate of the local step")
    batch_size: int = Field(10, ge=1, description="examples per batch")
    step_probability: list[float] = Field(
        [1 / 11, 1.0, 1.0],
        min_length=1,
        description="agent k takes its local step with probability step_probability[k mod len]",
    )
    train_fraction: float = Field(0.75, gt=0, lt=1, description="share of a subject's rows")
    eval_train: int | None = Field(
        None, ge=1, description="training examples per agent that train_loss is measured on"
    )


def load(settings: HarSettings) -> HarDataset:
    """UCI HAR from ``settings.data_dir``, fetched first if it is missing and ``download``."""
    try:
        return load_har(settings.data_dir)
    except DatasetError:
        if not settings.download:
            raise
        return load_har(download_har(settings.data_dir))


@CASES.register("har")
class HumanActivityRecognition(NeuralCase):
    """Multinomial logistic regression per subject on UCI HAR (the paper's case study 2)."""

    description = "logistic regression: 30 volunteers each recognise their own activities (UCI HAR)"
    settings_model = HarSettings
    defaults = CaseDefaults(
        attack="paper-scaled",
        attack_params={"scale": 0.1, "trains": True},
        nu=0.05,
        r0=1.0,
        dtype="float32",
        graph={"kind": "complete"},
    )

    @classmethod
    def from_settings(
        cls,
        settings: HarSettings,
        seed: int,
        dtype: torch.dtype = torch.float32,
        device: str = "cpu",
    ) -> HumanActivityRecognition:
        dataset = load(settings)
        x = np.concatenate([dataset.x_train, dataset.x_test])
        y = np.concatenate([dataset.y_train, dataset.y_test])
        subject = np.concatenate([dataset.subject_train, dataset.subject_test])
        subjects, counts = np.unique(subject, return_counts=True)
        if settings.agents is not None and settings.agents > len(subjects):
            raise DatasetError(
                f"{settings.data_dir}: expected at least {settings.agents} subjects "
                f"(task.agents), found {len(subjects)}"
            )
        if counts.min() < 2:
            raise DatasetError(
                f"{settings.data_dir}: expected at least 2 rows per subject (one to train on, one "
                f"to test), found {counts.min()} for subject {subjects[counts.argmin()]}"
            )
        subjects = subjects[: settings.agents]
        keys = rng.agent_keys(len(subjects))
        data = []
        for k, rows in enumerate(np.flatnonzero(subject == s) for s in subjects):
            shuffle = rng.uniform(seed, "har-split", keys[k : k + 1], 0, len(rows))[0]
            rows = rows[np.argsort(shuffle, kind="stable")]
            n_train = min(max(1, int(len(rows) * settings.train_fraction)), len(rows) - 1)
            train, test = rows[:n_train], rows[n_train:]
            data.append(AgentData(x[train], y[train], x[test], y[test]))
        model = nn.Linear(x.shape[1], len(dataset.activity_names))
        return cls(
            model,
            data,
            seed=seed,
            keys=keys,
            optimiser=make_optimiser(settings.optimizer, settings.lr),
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            step_probability=cyclic(settings.step_probability, len(subjects)),
            groups=np.arange(len(subjects)),
            group_names=[f"subject-{s}" for s in subjects],
            eval_train=settings.eval_train,
            dtype=dtype,
            device=device,
        )

    def default_byzantine(self, count: int) -> np.ndarray | None:
        """With all agents but one Byzantine, the paper keeps agent 4 normal."""
        if count == self.n_agents - 1 and self.n_agents > 4:
            return np.delete(np.arange(self.n_agents), 4)
        return None
