"""Resilience on the paper's target localization setting (100 agents, 500 iterations): every claim
holds for each of the seeds 0..4 (each seed draws its own network, targets, noise and attackers).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

import byzmtl

SEEDS = range(5)

PaperRun = Callable[[int, int], byzmtl.Result]


@pytest.fixture(scope="module")
def paper_run() -> PaperRun:
    """The paper's run for (seed, attackers), computed once per module."""
    done: dict[tuple[int, int], byzmtl.Result] = {}

    def get(seed: int, attackers: int) -> byzmtl.Result:
        if (seed, attackers) not in done:
            config = {"case": "target-localization", "attackers": attackers, "seed": seed}
            done[seed, attackers] = byzmtl.run(config)
        return done[seed, attackers]

    return get


def test_paper_setting_is_the_papers(paper_run: PaperRun) -> None:
    result = paper_run(0, 20)
    assert result.summary["agents"] == 100
    assert result.summary["records"] == 500
    assert len(result.summary["byzantine"]) == 20
    degrees = result.experiment.graph.degrees
    assert degrees.max() <= 10 and degrees.min() >= 1


@pytest.mark.parametrize("seed", SEEDS)
def test_loss_rule_resists_twenty_attackers(paper_run: PaperRun, seed: int) -> None:
    result = paper_run(seed, 20)
    loss = result.final("loss", "loss")
    assert loss <= 0.1
    assert loss <= result.final("none", "loss")
    for rule in ("average", "distance"):
        assert result.final(rule, "loss") >= 10 * loss


@pytest.mark.parametrize("seed", SEEDS)
def test_loss_rule_helps_without_attack(paper_run: PaperRun, seed: int) -> None:
    result = paper_run(seed, 0)
    assert result.final("loss", "loss") < result.final("none", "loss")
    assert result.final("loss", "msd") < result.final("none", "msd")
    # without attack too, average and distance mix the estimates of agents whose targets differ
    assert result.final("average", "loss") > 10 * result.final("none", "loss")


@pytest.mark.parametrize("seed", SEEDS)
def test_lone_normal_agent_matches_no_cooperation(paper_run: PaperRun, seed: int) -> None:
    result = paper_run(seed, 99)
    assert len(result.summary["byzantine"]) == 99
    assert result.final("loss", "loss") <= 1.5 * result.final("none", "loss")


def test_summary_has_per_target_groups(paper_run: PaperRun) -> None:
    groups = paper_run(0, 20).summary["rules"]["loss"]["groups"]
    assert sorted(groups) == ["target-0", "target-1", "target-2", "target-3"]
    for entry in groups.values():
        stats = entry["final"]["msd"]
        assert stats["min"] <= stats["mean"] <= stats["max"]
