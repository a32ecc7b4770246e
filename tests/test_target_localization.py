"""Resilience on the paper's target localization setting (100 agents, 500 iterations)."""

from __future__ import annotations

import pytest

import byzmtl

RULES = ["loss", "distance", "average", "none"]


@pytest.fixture(scope="module")
def paper_runs() -> dict[int, byzmtl.Result]:
    return {
        attackers: byzmtl.run({"case": "target-localization", "attackers": attackers, "seed": 0})
        for attackers in (0, 20, 99)
    }


def test_paper_setting_is_the_papers(paper_runs: dict[int, byzmtl.Result]) -> None:
    result = paper_runs[20]
    assert result.summary["agents"] == 100
    assert result.summary["records"] == 500
    assert len(result.summary["byzantine"]) == 20
    degrees = result.experiment.graph.degrees
    assert degrees.max() <= 10 and degrees.min() >= 1


def test_loss_rule_resists_twenty_attackers(paper_runs: dict[int, byzmtl.Result]) -> None:
    result = paper_runs[20]
    loss = result.final("loss", "loss")
    assert loss <= 0.1
    assert loss <= result.final("none", "loss")
    for rule in ("average", "distance"):
        assert result.final(rule, "loss") >= 10 * loss


def test_loss_rule_helps_without_attack(paper_runs: dict[int, byzmtl.Result]) -> None:
    result = paper_runs[0]
    assert result.final("loss", "loss") < result.final("none", "loss")
    assert result.final("loss", "msd") < result.final("none", "msd")
    # without attack too, average and distance mix the estimates of agents whose targets differ
    assert result.final("average", "loss") > 10 * result.final("none", "loss")


def test_lone_normal_agent_matches_no_cooperation(paper_runs: dict[int, byzmtl.Result]) -> None:
    result = paper_runs[99]
    assert len(result.summary["byzantine"]) == 99
    assert result.final("loss", "loss") <= 1.5 * result.final("none", "loss")


def test_summary_has_per_target_groups(paper_runs: dict[int, byzmtl.Result]) -> None:
    groups = paper_runs[20].summary["rules"]["loss"]["groups"]
    assert sorted(groups) == ["target-0", "target-1", "target-2", "target-3"]
    for entry in groups.values():
        stats = entry["final"]["msd"]
        assert stats["min"] <= stats["mean"] <= stats["max"]
