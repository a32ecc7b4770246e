"""Diagnostics recorded in every run: weight on Byzantine senders, own-task share, regret."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from byzmtl.experiment import run
from byzmtl.recording import DIAGNOSTICS, Diagnostics

SMALL = {
    "case": "target-localization",
    "attackers": 8,
    "seed": 3,
    "task": {"agents": 40, "iterations": 30},
    "graph": {"kind": "geometric", "radius": 1.0, "max_neighbours": 10},
}


@pytest.fixture(scope="module")
def result():
    return run(SMALL | {"rules": ["average", "loss", "none"]})


def test_average_rule_weights_are_counted_exactly(result) -> None:
    experiment = result.experiment
    graph, normal, groups = experiment.graph, experiment.normal, experiment.case.groups
    byzantine_share, own_share = [], []
    for k in np.flatnonzero(normal):
        senders = graph.senders[graph.receivers == k]
        byzantine_share.append(np.mean(~normal[senders]))
        own_share.append(np.mean(normal[senders] & (groups[senders] == groups[k])))
    rows = result.diagnostics[result.diagnostics["rule"] == "average"]
    assert len(rows) == 30 and list(rows["iteration"]) == list(range(1, 31))
    np.testing.assert_allclose(rows["byzantine_weight_mean"], np.mean(byzantine_share))
    np.testing.assert_allclose(rows["byzantine_weight_max"], np.max(byzantine_share))
    np.testing.assert_allclose(rows["own_task_weight_mean"], np.mean(own_share))
    np.testing.assert_allclose(rows["own_task_weight_min"], np.min(own_share))
    alone = result.diagnostics[result.diagnostics["rule"] == "none"]
    assert (alone["byzantine_weight_max"] == 0).all() and (alone["own_task_weight_min"] == 1).all()


def test_regret_is_the_cumulative_excess_loss_over_no_cooperation(result) -> None:
    metrics = result.metrics[result.metrics["group"] == "all"]
    alone = metrics[metrics["rule"] == "none"]["loss_mean"].to_numpy()
    for rule in ("average", "loss"):
        mine = metrics[metrics["rule"] == rule]["loss_mean"].to_numpy()
        rows = result.diagnostics[result.diagnostics["rule"] == rule]
        np.testing.assert_allclose(rows["regret_mean"], np.cumsum(mine - alone), rtol=1e-9)
        assert (rows["regret_max"] >= rows["regret_mean"] - 1e-9).all()
        summary = result.summary["rules"][rule]["diagnostics"]["regret"]
        assert summary["mean"] == pytest.approx(np.sum(mine - alone))
    assert (result.diagnostics[result.diagnostics["rule"] == "none"]["regret_max"] == 0).all()


def test_summary_and_metrics_keep_their_format(result) -> None:
    assert list(result.metrics.columns) == [
        "rule", "group", "iteration", "loss_mean", "loss_min", "loss_max", "msd_mean",
        "msd_min", "msd_max",
    ]  # fmt: skip
    assert list(result.diagnostics.columns) == ["rule", "iteration", *DIAGNOSTICS]
    summary = result.summary
    assert summary["diagnostics"] == {
        "regret_reference": "none",
        "regret_metric": "loss",
        "rounds": 30,
    }
    for rule in ("average", "loss", "none"):
        entry = summary["rules"][rule]
        assert set(entry["final"]["loss"]) == {"mean", "min", "max", "worst"}
        assert set(entry["groups"]) <= set(summary["groups"])
        assert set(entry["diagnostics"]) == {"byzantine_weight", "own_task_weight", "regret"}
    window = result.diagnostics[result.diagnostics["rule"] == "loss"].tail(3)
    byzantine = summary["rules"]["loss"]["diagnostics"]["byzantine_weight"]
    assert byzantine["mean"] == pytest.approx(window["byzantine_weight_mean"].mean())


def test_without_no_cooperation_there_is_no_regret() -> None:
    result = run(SMALL | {"rules": ["loss"]})
    assert result.summary["diagnostics"]["regret_reference"] is None
    assert result.summary["rules"]["loss"]["diagnostics"]["regret"] == {"mean": None, "max": None}
    assert result.diagnostics["regret_mean"].isna().all()
    assert result.diagnostics["byzantine_weight_mean"].notna().all()


def test_sparse_records_give_regret_at_records_and_weights_every_round(result) -> None:
    """Learning case studies record metrics once per epoch; rounds are still iterations."""
    experiment = result.experiment
    graph = experiment.graph
    diagnostics = Diagnostics(
        graph.receivers, graph.senders, experiment.normal, experiment.case.groups,
        ["average", "loss", "none"], "loss",
    )  # fmt: skip
    simulation, epoch = experiment.simulation, 7
    losses = []

    def record(state, output) -> None:
        i = state.iteration - 1
        metrics = output.metrics if (i + 1) % epoch == 0 else None
        if metrics is not None:
            losses.append(metrics["loss"][:, experiment.normal].mean(1).numpy())
        diagnostics.add(i, output.weights, metrics)

    simulation.run(on_round=record)
    table = diagnostics.table()
    rows = table[table["rule"] == "loss"]
    recorded = rows.dropna(subset=["regret_mean"])
    assert list(recorded["iteration"]) == [7, 14, 21, 28]
    expected = np.cumsum([row[1] - row[2] for row in losses])
    np.testing.assert_allclose(recorded["regret_mean"], expected, rtol=1e-9)
    assert rows["byzantine_weight_mean"].notna().all() and len(rows) == 30
    last_epoch = rows[rows["iteration"] > 21]  # final = the last record's epoch
    final = diagnostics.summary(final_fraction=0.0)["loss"]
    assert final["byzantine_weight"]["mean"] == pytest.approx(
        last_epoch["byzantine_weight_mean"].mean()
    )
    assert final["regret"]["mean"] == pytest.approx(expected[-1])
    pd.testing.assert_series_equal(
        rows["own_task_weight_mean"].reset_index(drop=True),
        result.diagnostics[result.diagnostics["rule"] == "loss"][
            "own_task_weight_mean"
        ].reset_index(drop=True),
    )


def test_percentiles_and_the_worst_agent_come_from_the_per_agent_values() -> None:
    rounds: list[np.ndarray] = []  # (R, N) loss of every agent, every round

    def keep(state, output) -> None:
        rounds.append(output.metrics["loss"].numpy().copy())

    result = run(SMALL | {"rules": ["loss", "none"], "percentiles": [10, 90]}, on_round=keep)
    normal = result.experiment.normal
    values = np.stack(rounds)[:, :, normal]  # (rounds, R, normal agents)
    table = result.metrics[result.metrics["group"] == "all"]
    for r, rule in enumerate(["loss", "none"]):
        rows = table[table["rule"] == rule]
        for p in (10, 90):
            expected = np.percentile(values[:, r], p, axis=1)
            np.testing.assert_allclose(rows[f"loss_p{p}"], expected, rtol=1e-12)
        final = result.summary["rules"][rule]["final"]["loss"]
        window = values[-3:, r]  # the final 10% of 30 iterations
        assert final["worst"] == pytest.approx(window.mean(0).max())
        assert final["max"] == pytest.approx(window.max(1).mean())
        assert final["p90"] == pytest.approx(np.percentile(window, 90, axis=1).mean())
