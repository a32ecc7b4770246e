"""``configs/digits-demo.toml``, the digits demo that learns in about two minutes on a CPU: it is
the paper's case study 3 (10 agents, 5 MNIST and 5 synthetic, agents 2 and 7 attacking, complete
graph) on less data and smaller batches, and after one of its three epochs the loss rule already
learns MNIST while ``average`` is at chance under the attack.

The measured demo (three seeds, with and without attack, whole-process seconds):
``python benchmarks/digits_cpu.py demo --threads 1``, ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import byzmtl
from byzmtl.config import read_toml
from byzmtl.experiment import prepare

DEMO = Path(__file__).resolve().parents[1] / "configs" / "digits-demo.toml"


@pytest.fixture
def render_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendered synthetic digits go to the session's temporary folder, not the user's cache."""
    monkeypatch.setenv("BYZMTL_CACHE", str(tmp_path_factory.getbasetemp() / "digits-cache"))


def demo_config(data_dir: Path, **task: Any) -> dict[str, Any]:
    """The demo's configuration with MNIST read from ``data_dir`` and ``task`` overridden."""
    config = read_toml(DEMO)
    config["task"] = {**config["task"], "data_dir": str(data_dir), **task}
    return config


@pytest.mark.usefixtures("render_cache")
def test_demo_is_the_paper_network_with_agents_2_and_7_attacking(mnist_sample: Path) -> None:
    raw = read_toml(DEMO)
    assert raw["case"] == "digits" and raw["rules"] == ["loss", "average", "none"]
    small = demo_config(mnist_sample, train_per_agent=32, test_per_agent=16)
    experiment = prepare(small)
    case, config = experiment.case, experiment.config
    assert case.n_agents == 10
    assert case.groups.tolist() == [0] * 5 + [1] * 5  # 0 = mnist, 1 = synthetic
    assert experiment.byzantine.tolist() == [2, 7]
    assert config.rules == ["loss", "average", "none"]
    assert config.attack == "paper-scaled"
    assert experiment.graph.n_edges == 10 * 10  # complete, self-loops included
    assert case.schedule.batch_sizes.tolist() == [16] * 10
    task = read_toml(DEMO)["task"]
    expected = {"train_per_agent": 1000, "test_per_agent": 200, "epochs": 3, "lr": 0.002}
    assert {key: task[key] for key in expected} == expected
    assert task["optimizer"] == "adam" and task["eval_train"] == 100
    assert prepare({**small, "attackers": 0}).byzantine.tolist() == []  # the attack-free run


@pytest.mark.usefixtures("render_cache")
def test_demo_learns_mnist_in_one_epoch_while_average_collapses(full_mnist: Path) -> None:
    """One of the demo's three epochs (63 rounds), seed 0, under attack. Measured on seeds 0, 1
    and 2 (MNIST mean test accuracy): loss 0.721, 0.715, 0.777; average 0.086, 0.138, 0.104."""
    config = {**demo_config(full_mnist, epochs=1), "rules": ["loss", "average"]}
    result = byzmtl.run(config)
    assert result.summary["byzantine"] == [2, 7]
    assert result.experiment.case.rounds_per_epoch == 63  # 1000 images in batches of 16
    assert result.final("loss", "accuracy", group="mnist") > 0.5
    assert result.final("average", "accuracy", group="mnist") < 0.2
