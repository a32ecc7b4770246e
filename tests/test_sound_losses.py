"""Losses no message can fool: every score and metric is sound for any finite model (never
negative, never NaN, never a cancellation to 0), and a message whose loss cannot be computed
soundly is unscorable, hence filtered."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import byzmtl
from byzmtl.attacks import ATTACKS
from byzmtl.engine import RoundOutput, Simulation
from byzmtl.experiment import Experiment, prepare
from byzmtl.tasks.neural import SOUND_LOGIT_ERROR, cross_entropy, score_cross_entropy

DTYPES = [torch.float32, torch.float64]


def reference_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """log sum_c exp(z_c - z_y), in exact rational-free float64 arithmetic on differences."""
    z = logits.double().numpy()
    y = labels.numpy()
    shifted = z - np.take_along_axis(z, y[:, None], 1)
    top = shifted.max(1, keepdims=True)
    return (top[:, 0] + np.log(np.exp(shifted - top).sum(1))).astype(np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e20, 1e30, 1e38])
def test_a_constant_model_scores_log_c_at_any_scale(dtype: torch.dtype, scale: float) -> None:
    logits = torch.full((4, 6), scale, dtype=dtype)
    labels = torch.tensor([0, 1, 2, 5])
    expected = torch.full((4,), math.log(6), dtype=torch.float64)
    assert torch.allclose(cross_entropy(logits, labels).double(), expected)


@settings(deadline=None, max_examples=200)
@given(
    dtype=st.sampled_from(DTYPES),
    exponent=st.floats(-30, 30),
    data=st.data(),
)
def test_cross_entropy_is_exact_and_never_negative(
    dtype: torch.dtype, exponent: float, data: st.DataObject
) -> None:
    classes = data.draw(st.integers(2, 8))
    rows = data.draw(
        st.lists(
            st.lists(st.floats(-1, 1, allow_nan=False), min_size=classes, max_size=classes),
            min_size=1,
            max_size=5,
        )
    )
    logits = (torch.tensor(rows, dtype=torch.float64) * 10.0**exponent).to(dtype)
    labels = torch.tensor(data.draw(st.lists(st.integers(0, classes - 1), min_size=len(rows))))
    labels = labels[: len(rows)]
    if len(labels) < len(rows):
        labels = torch.cat([labels, torch.zeros(len(rows) - len(labels), dtype=torch.long)])
    got = cross_entropy(logits, labels)
    assert torch.isfinite(got).all() and (got >= 0).all()
    expected = reference_cross_entropy(logits, labels)
    eps = torch.finfo(dtype).eps
    assert np.allclose(got.double().numpy(), expected, rtol=8 * eps, atol=8 * eps)


@pytest.mark.parametrize("dtype", DTYPES)
def test_scores_of_logits_beyond_the_sound_range_are_infinite(dtype: torch.dtype) -> None:
    limit = SOUND_LOGIT_ERROR / torch.finfo(dtype).eps
    labels = torch.tensor([0, 1])
    inside = torch.tensor([[0.5 * limit, 0.0], [1.0, 2.0]], dtype=dtype)
    outside = torch.tensor([[2.0 * limit, 2.0 * limit], [1.0, 2.0]], dtype=dtype)
    assert torch.equal(score_cross_entropy(inside, labels), cross_entropy(inside, labels))
    scores = score_cross_entropy(outside, labels)
    assert scores[0] == torch.inf and scores[1] == cross_entropy(outside, labels)[1]


MAGNITUDES = {
    "float32": [1e-30, 1e-10, 1.0, 1e3, 1e10, 1e20, 1e30, 1e38],
    "float64": [1e-30, 1e-10, 1.0, 1e3, 1e10, 1e38, 1e100, 1e200, 1e300],
}


def attack_params(attack: str, magnitude: float) -> dict[str, float]:
    return {
        "constant": {"value": magnitude, "spread": 0.0},
        "scaled": {"scale": magnitude},
        "noise": {"low": -magnitude, "high": magnitude},
    }[attack]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("attack", ["constant", "scaled", "noise"])
def test_target_localization_loss_rule_is_never_worse_than_learning_alone(
    dtype: str, attack: str
) -> None:
    for magnitude in MAGNITUDES[dtype]:
        result = byzmtl.run(
            {
                "case": "target-localization",
                "rules": ["loss", "none"],
                "attackers": 10,
                "attack": attack,
                "attack_params": attack_params(attack, magnitude),
                "dtype": dtype,
                "task": {"agents": 40, "iterations": 60},
            }
        )
        assert math.isfinite(result.final("loss", "msd", "max")), magnitude
        loss_rule, alone = result.final("loss", "loss"), result.final("none", "loss")
        assert loss_rule <= alone, (magnitude, loss_rule, alone)  # the paper's regret claim


def _keep(records: list, weights: list, experiment: Experiment) -> Callable:
    """A round callback keeping the metrics records and each round's total weight (R,) that
    normal agents give Byzantine senders."""
    graph, normal = experiment.graph, experiment.normal
    byzantine = torch.as_tensor(~normal[graph.senders] & normal[graph.receivers])

    def keep(state: object, output: RoundOutput) -> None:
        if output.metrics is not None:
            records.append(output.metrics)
        weights.append(torch.stack([w[byzantine].sum() for w in output.weights]))  # type: ignore[index]

    return keep


def sweep(experiment: Experiment, dtype: str, every: int = 1) -> list[tuple[str, float, dict]]:
    """Every attack x ``every``-th magnitude of the sweep (the largest always) on
    ``experiment``'s network and data: the final record's per-agent metrics (name -> (R, N))
    and, per round, the weights normal agents give Byzantine senders (R,)."""
    out = []
    magnitudes = MAGNITUDES[dtype][::every] + MAGNITUDES[dtype][-1:]
    for attack in ("constant", "scaled", "noise"):
        for magnitude in dict.fromkeys(magnitudes):
            instance = ATTACKS.create(attack, attack_params(attack, magnitude))
            simulation = Simulation(
                experiment.case, experiment.graph, experiment.rules, instance,
                experiment.byzantine, 0, experiment.case.keys, getattr(torch, dtype),
            )  # fmt: skip
            records: list[dict] = []
            weights: list[torch.Tensor] = []
            state = simulation.run(on_round=_keep(records, weights, experiment))
            assert torch.isfinite(state.models[:, experiment.normal]).all(), (attack, magnitude)
            out.append((attack, magnitude, {**records[-1], "weights": weights}))
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_har_loss_rule_is_never_worse_than_learning_alone(dtype: str, full_har: Path) -> None:
    experiment = prepare(
        {"case": "har", "rules": ["loss", "none"], "attackers": 5, "dtype": dtype,
         "task": {"data_dir": str(full_har), "epochs": 2, "agents": 15}}
    )  # fmt: skip
    normal = experiment.normal
    for attack, magnitude, final in sweep(experiment, dtype):
        for name in ("train_loss", "test_loss", "accuracy"):
            assert not torch.isnan(final[name]).any(), (attack, magnitude, name)
        loss_rule, alone = final["test_loss"][:, normal].mean(1).tolist()
        assert loss_rule <= alone, (attack, magnitude, loss_rule, alone)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_digits_scores_filter_every_unsound_message(dtype: str, mnist_sample: Path) -> None:
    """Digits on the in-repository sample (too little data to learn: the check is that the
    metrics stay finite and that messages whose loss is unsound get no weight)."""
    experiment = prepare(
        {"case": "digits", "rules": ["loss", "none"], "attackers": 2, "dtype": dtype,
         "task": {"data_dir": str(mnist_sample), "epochs": 1, "mnist_agents": 2,
                  "synthetic_agents": 2, "train_per_agent": 32, "test_per_agent": 16,
                  "mnist_batch": 16, "synthetic_batch": 16}}
    )  # fmt: skip
    limit = SOUND_LOGIT_ERROR / torch.finfo(getattr(torch, dtype)).eps
    for attack, magnitude, final in sweep(experiment, dtype, every=3):
        for name in ("train_loss", "test_loss", "accuracy"):
            assert not torch.isnan(final[name]).any(), (attack, magnitude, name)
        if magnitude > limit:  # every logit of such a message is beyond the sound range
            assert all(float(w[0]) == 0.0 for w in final["weights"]), (attack, magnitude)
