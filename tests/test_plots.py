"""Figures: scales chosen from the data, legends that fit, drawing that never fails a run, the
network saved for redrawing, ``byzmtl plot``, the matrix colour scale, diagnostics per epoch."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.colors import to_rgb

from byzmtl import graph as graphs
from byzmtl import plots
from byzmtl.cli import main
from byzmtl.recording import DIAGNOSTICS, Diagnostics

TIME = np.arange(1, 6)


def metrics_table(values: dict[str, np.ndarray], rules=("loss", "none"), extra=()) -> pd.DataFrame:
    """metrics.csv rows for ``rules`` over TIME (group "all"): <metric>_mean = values, with
    min / max (and the ``extra`` statistics) a fixed factor around it."""
    rows = []
    for rule in rules:
        row: dict[str, object] = {"rule": rule, "group": "all", "iteration": TIME}
        for name, v in values.items():
            row |= {f"{name}_mean": v, f"{name}_min": v * 0.5, f"{name}_max": v * 2}
            row |= {f"{name}_{s}": v * (0.8 if s.endswith("10") else 1.2) for s in extra}
        rows.append(pd.DataFrame(row))
    return pd.concat(rows, ignore_index=True)


# -- scales -------------------------------------------------------------------------------------


def test_log_scale_only_where_positive_data_span_more_than_a_decade() -> None:
    assert plots.axis_scale([1.0, 10.5])[0] == "log"
    assert plots.axis_scale([2.26, 2.31])[0] == "linear"
    assert plots.axis_scale([1.0, 10.0])[0] == "linear"  # exactly a decade
    assert plots.axis_scale([1e-11, 1e3])[0] == "log"
    assert plots.axis_scale([1.0, 1e9], allow_log=False)[0] == "linear"
    assert plots.axis_scale([1.0, 2.0, np.inf, np.nan])[0] == "linear"  # non-finite left out
    assert plots.axis_scale([np.nan, np.inf])[0] == "linear"
    assert plots.axis_scale([])[0] == "linear"


def test_zero_or_negative_data_are_never_log_scaled() -> None:
    assert plots.axis_scale([0.0, 1e-3, 1.0, 5.0]) == ("symlog", {"linthresh": 1e-3})
    assert plots.axis_scale([-1500.0, -10.0, 0.0, 200.0, 1e4])[0] == "symlog"
    assert plots.axis_scale([-1.0, 0.0, 2.0])[0] == "linear"
    assert plots.axis_scale([0.0, 0.0])[0] == "linear"


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=30))
def test_the_scale_of_any_data_is_drawable(values: list[float]) -> None:
    name, options = plots.axis_scale(values)
    finite = np.array([v for v in values if np.isfinite(v)])
    assert name in ("linear", "log", "symlog")
    if name == "log":
        assert finite.min() > 0
    if name == "symlog":
        assert 0 < options["linthresh"] <= np.abs(finite[finite != 0]).max()


# -- colours and legends ------------------------------------------------------------------------


@pytest.mark.parametrize("count", [4, 7, 12, 25])
def test_every_rule_gets_its_own_colour(count: int) -> None:
    rules = ["loss", "distance", "average", "none", *[f"rule-{i}" for i in range(count - 4)]]
    colours = plots.rule_colours(rules)
    assert len({to_rgb(c) for c in colours.values()}) == count
    if count <= 20:
        assert to_rgb(colours["loss"]) == to_rgb("tab:blue")
        assert to_rgb(colours["none"]) == to_rgb("tab:gray")


def network_drawing(n_groups: int, n_agents: int = 30) -> plots.Network:
    groups = np.arange(n_agents) % n_groups
    names = [f"subject-{g + 1}" for g in range(n_groups)]
    return plots.network_of(graphs.complete(n_agents), groups, names, np.array([2, 7]))


def test_few_groups_get_a_legend_many_a_colour_bar() -> None:
    few = plots.network_figure(network_drawing(4))
    legend = [t.get_text() for t in few.legends[0].get_texts()]
    assert legend == ["subject-1", "subject-2", "subject-3", "subject-4", "Byzantine (2)"]
    assert len(few.axes) == 1  # no colour bar
    many = plots.network_figure(network_drawing(30))
    assert [t.get_text() for t in many.legends[0].get_texts()] == ["Byzantine (2)"]
    assert len(many.axes) == 2 and many.axes[1].get_ylabel() == "task group"
    assert "435 links (complete graph)" in many.axes[0].get_title()
    plt.close("all")


def test_the_network_is_saved_for_redrawing(tmp_path: Path) -> None:
    ring = graphs.ring(6000)
    groups = np.arange(6000) % 3
    plots.save_network(tmp_path / "n.npz", ring, groups, ["a", "b", "c"], np.array([0, 5]))
    network = plots.load_network(tmp_path / "n.npz")
    assert network.n_agents == 6000 and network.n_links == 6000 and not network.directed
    assert len(network.agents) == plots.MAX_DRAWN_AGENTS and network.n_byzantine == 2
    assert network.group_names == ["a", "b", "c"]
    np.testing.assert_array_equal(network.groups, groups[network.agents])
    pairs = {tuple(p) for p in network.agents[np.stack([network.receivers, network.senders], 1)]}
    assert pairs and all(abs(r - s) in (1, 5999) for r, s in pairs)  # ring links, drawn once
    plt.close(plots.network_figure(network))


def test_a_directed_graph_counts_its_edges() -> None:
    directed = graphs.Graph(3, np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]))
    network = plots.network_of(directed, np.zeros(3, int), [], np.array([], int))
    assert network.directed and network.n_links == 1


# -- drawing never fails ------------------------------------------------------------------------


def test_metrics_figure_draws_nan_inf_zero_and_negative_values() -> None:
    awkward = np.array([np.nan, np.inf, 0.0, -3.0, 1e155])
    table = metrics_table({"loss": awkward, "msd": np.array([1e-3, 1.0, 10.0, 100.0, 1e4])})
    fig = plots.metrics_figure(table, ["loss", "msd"], "iteration")
    loss_axes, msd_axes = fig.axes
    assert loss_axes.get_yscale() != "log" and msd_axes.get_yscale() == "log"
    assert any("non-finite values not drawn" in t.get_text() for t in loss_axes.texts)
    fig.savefig(Path("/dev/null"), format="png")
    plt.close(fig)


def test_log_hints_limit_which_metrics_may_be_log_scaled() -> None:
    table = metrics_table({"loss": np.geomspace(1, 1e4, 5), "accuracy": np.geomspace(1e-3, 1, 5)})
    fig = plots.metrics_figure(table, ["loss", "accuracy"], "iteration", log_metrics=["loss"])
    assert [ax.get_yscale() for ax in fig.axes] == ["log", "linear"]
    plt.close(fig)


def test_percentile_bands_use_the_percentile_columns() -> None:
    table = metrics_table({"loss": np.full(5, 10.0)}, rules=("loss",), extra=("p10", "p90"))
    for band, (low, high) in (("minmax", (5.0, 20.0)), ("p10-p90", (8.0, 12.0))):
        fig = plots.metrics_figure(table, ["loss"], "iteration", band=band)
        (ax,) = fig.axes
        (polygon,) = [c for c in ax.collections if c.get_paths()]
        y = polygon.get_paths()[0].vertices[:, 1]
        assert (y.min(), y.max()) == pytest.approx((low, high))
        plt.close(fig)
    with pytest.raises(ValueError, match="band"):
        plots.band_columns("p90-p10")


def test_diagnostics_figure_draws_without_weights_or_regret() -> None:
    table = pd.DataFrame({"rule": ["loss"] * 3, "epoch": [0.5, 1.0, 1.5]})
    for name in DIAGNOSTICS:
        table[name] = np.nan
    table.loc[1, "regret_mean"], table.loc[1, "regret_max"] = -np.inf, 0.0
    fig = plots.diagnostics_figure(table, "epoch")
    assert all(ax.get_xlabel() == "epoch" for ax in fig.axes)
    notes = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert notes[:2] == ["no rule with weights", "no rule with weights"]
    plt.close(fig)


def test_draw_figures_warns_about_missing_or_broken_files(tmp_path: Path) -> None:
    warnings = plots.draw_figures(tmp_path)
    assert len(warnings) == 4 and warnings[0].startswith("summary.json unreadable")
    assert [w.split(":")[0] for w in warnings[1:]] == ["figure", "diagnostics", "network"]
    (tmp_path / "summary.json").write_text('{"case": "target-localization"')
    (tmp_path / "metrics.csv").write_text("not,a\nmetrics table\n")
    (tmp_path / "network.npz").write_bytes(b"broken")
    warnings = plots.draw_figures(tmp_path, formats=["png", "svg"])
    assert len(warnings) == 4 and all("\n" not in w for w in warnings)
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob(".*"))
    with pytest.raises(ValueError, match="format"):
        plots.draw_figures(tmp_path, formats=["gif"])


# -- byzmtl plot --------------------------------------------------------------------------------

RUN = [
    "run",
    "target-localization",
    "--agents",
    "20",
    "--iterations",
    "20",
    "--attackers",
    "4",
    "--no-progress",
    "--quiet",
]


def test_plot_redraws_a_saved_run_in_png_and_pdf(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main([*RUN, "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["warnings"] == []
    assert (out / "network.npz").is_file()
    for figure in out.glob("*.png"):
        figure.unlink()
    assert main(["plot", str(out), "--format", "png,pdf", "--quiet"]) == 0
    for name in ("figure", "diagnostics", "network"):
        assert (out / f"{name}.png").stat().st_size > 10_000
        assert (out / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    assert main(["plot", str(out), "--format", "svg", "--band", "p10-p90", "--quiet"]) == 1
    assert (out / "figure.svg").is_file()  # drawn, with min-max bands and a warning
    assert main(["plot", str(out), "--format", "gif"]) == 2
    assert main(["plot", str(tmp_path / "nothing")]) == 2


def test_a_figure_that_fails_is_a_warning_in_the_summary(tmp_path: Path, monkeypatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("cannot draw this")

    monkeypatch.setattr(plots.redraw, "network_figure", broken)
    out = tmp_path / "run"
    assert main([*RUN, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["warnings"] == ["network: not drawn (RuntimeError: cannot draw this)"]
    assert (out / "figure.png").is_file() and not (out / "network.png").exists()


# -- the resilience matrix ----------------------------------------------------------------------


def test_matrix_colours_tell_26_times_from_1e155_times() -> None:
    exponents = np.log10([1.0, 26.0, 1e3, 1e155, 1 / 26, np.nan])
    norm = plots.matrix_colours(exponents)
    same, moderate, large, huge, better, _ = norm(exponents)
    assert same == pytest.approx(0.5) and huge == pytest.approx(1.0)
    assert 0.55 < moderate < large - 0.03 and large < huge - 0.2  # no saturation at 1e3
    assert better == pytest.approx(1 - moderate)


def test_matrix_figure_names_no_attack_and_no_cooperation_apart(tmp_path: Path) -> None:
    ratios = {"loss": 26.0, "none": 1.0, "average": 1e155}
    table = pd.DataFrame(
        [
            {"rule": rule, "attack": attack, "loss_mean": 0.1 * ratio, "loss_vs_none": ratio}
            for rule, ratio in ratios.items()
            for attack in ("none", "constant")
        ]
    ).assign(accuracy_mean=0.0, accuracy_vs_none=np.nan)  # no cooperation at 0: no ratio
    path = tmp_path / "matrix.png"
    plots.matrix_figure(
        table,
        ["loss", "none", "average"],
        ["none", "constant"],
        ["loss", "accuracy"],
        ["accuracy"],
        path,
    )
    assert path.stat().st_size > 10_000
    assert plots.matrix_label("none", "attack") == "no attack"
    assert plots.matrix_label("none", "rule") == "none (no cooperation)"
    assert plots.matrix_label("krum", "rule") == "krum"


# -- diagnostics on the metrics' time axis ------------------------------------------------------


def test_diagnostics_of_a_learning_case_are_per_epoch() -> None:
    """Four rounds an epoch, metrics at the last round of each: round r is at epoch r / 4."""
    complete = graphs.complete(3)
    normal, groups = np.ones(3, bool), np.zeros(3, int)
    diagnostics = Diagnostics(
        complete.receivers,
        complete.senders,
        normal,
        groups,
        ["loss", "none"],
        "test_loss",
        time_unit="epoch",
        record_times=[1, 2, 3],
    )
    weights = torch.full((complete.n_edges,), 1 / 3, dtype=torch.float64)
    for i in range(12):
        metrics = {"test_loss": torch.rand(2, 3)} if (i + 1) % 4 == 0 else None
        diagnostics.add(i, [weights, None], metrics)
    table = diagnostics.table()
    assert list(table.columns) == ["rule", "round", "epoch", *DIAGNOSTICS]
    rows = table[table["rule"] == "loss"]
    np.testing.assert_allclose(rows["epoch"], np.arange(1, 13) / 4)
    assert list(rows.dropna(subset=["regret_mean"])["epoch"]) == [1.0, 2.0, 3.0]
    final = diagnostics.summary(final_fraction=0.0, table=table)["loss"]
    assert final["own_task_weight"]["mean"] == pytest.approx(1.0)
    default = Diagnostics(complete.receivers, complete.senders, normal, groups, ["none"], None)
    default.add(0, [None], None)
    assert list(default.table().columns) == ["rule", "iteration", *DIAGNOSTICS]
