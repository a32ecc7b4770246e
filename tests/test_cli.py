"""The command line: results folders, config files, and one-line errors that write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import tomllib

from byzmtl.cli import main

SHORT = ["--iterations", "60", "--no-progress", "--quiet"]


def test_run_writes_a_complete_results_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                "target-localization",
                "--attackers",
                "20",
                "--seed",
                "0",
                "--rules",
                "loss,distance,average,none",
                "--out",
                str(out),
                *SHORT,
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "config.toml",
        "diagnostics.csv",
        "diagnostics.png",
        "figure.png",
        "metrics.csv",
        "network.npz",
        "network.png",
        "summary.json",
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["case"] == "target-localization" and summary["seed"] == 0
    assert len(summary["byzantine"]) == 20 and summary["wall_seconds"] > 0
    assert set(summary["versions"]) >= {"byzmtl", "torch", "numpy", "python"}
    for rule in ("loss", "distance", "average", "none"):
        final = summary["rules"][rule]["final"]["loss"]
        assert final["min"] <= final["mean"] <= final["max"]
    metrics = pd.read_csv(out / "metrics.csv")
    assert {"rule", "group", "iteration", "loss_mean", "loss_min", "loss_max", "msd_mean"} <= set(
        metrics.columns
    )
    assert len(metrics[(metrics.rule == "loss") & (metrics.group == "all")]) == 60
    config = tomllib.loads((out / "config.toml").read_text())
    assert config["attackers"] == 20 and config["task"]["iterations"] == 60
    assert not list(tmp_path.glob(".run.*")), "no staging folder left behind"


def test_config_file_and_flag_override(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        'case = "target-localization"\nseed = 4\nattackers = 5\n'
        'rules = ["loss", "none"]\n[task]\niterations = 30\n'
    )
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                "--config",
                str(config),
                "--seed",
                "9",
                "--out",
                str(out),
                "--no-progress",
                "--quiet",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 9 and summary["records"] == 30
    assert sorted(summary["rules"]) == ["loss", "none"]
    rerun = tmp_path / "rerun"  # the written config reproduces the run
    assert (
        main(
            [
                "run",
                "--config",
                str(out / "config.toml"),
                "--out",
                str(rerun),
                "--no-progress",
                "--quiet",
            ]
        )
        == 0
    )
    assert (out / "metrics.csv").read_text() == (rerun / "metrics.csv").read_text()


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--rules", "loss,bogus"], "rules"),
        (["--attackers", "100"], "attackers"),
        (["--attackers", "-1"], "attackers"),
        (["--nu", "1.5"], "nu"),
        (["--nu", "0"], "nu"),
        (["--attack", "bogus"], "attack"),
        (["--attack-param", "scale=2"], "attack_params"),
        (["--set", "task.mu=-1"], "task.mu"),
        (["--set", "task.bogus=1"], "task.bogus"),
        (["--graph", "bogus"], "graph.kind"),
        (["--byzantine", "1,500"], "byzantine"),
        (["--config", "/nonexistent/c.toml"], "config"),
    ],
)
def test_bad_input_is_one_line_naming_the_field_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], field: str
) -> None:
    out = tmp_path / "run"
    assert main(["run", "target-localization", *args, "--out", str(out), *SHORT]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("byzmtl: error: ")
    assert field in err
    assert list(tmp_path.iterdir()) == []


def test_unknown_case_and_unreadable_config(tmp_path: Path, capsys) -> None:
    assert main(["run", "nope", "--out", str(tmp_path / "x"), *SHORT]) == 2
    assert "case" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = = 3")
    assert (
        main(
            [
                "run",
                "target-localization",
                "--config",
                str(bad),
                "--out",
                str(tmp_path / "x"),
                *SHORT,
            ]
        )
        == 2
    )
    assert "not valid TOML" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_existing_run_is_kept_unless_overwrite(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["run", "target-localization", "--out", str(out), *SHORT]) == 0
    before = (out / "summary.json").read_text()
    assert main(["run", "target-localization", "--seed", "1", "--out", str(out), *SHORT]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == before
    assert (
        main(
            ["run", "target-localization", "--seed", "1", "--out", str(out), "--overwrite", *SHORT]
        )
        == 0
    )
    assert json.loads((out / "summary.json").read_text())["seed"] == 1


def test_list_json(capsys) -> None:
    assert main(["list", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert "target-localization" in info["cases"]
    assert {"loss", "distance", "average", "none"} <= set(info["rules"])
    assert {"constant", "scaled", "noise", "nan", "inf"} <= set(info["attacks"])
    assert info["rules"]["loss"] == {"nu": 0.1, "r0": 10.0}


def test_bench_scaling_point_and_bad_choice(capsys) -> None:
    assert main(["bench", "--only", "scaling", "--agents", "1e3", "--rounds", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (point,) = report["scaling"]
    assert point["agents"] == 1000 and point["edges"] > 1000
    assert point["seconds_per_round"] > 0 and point["peak_memory_gb"] > 0
    assert main(["bench", "--only", "bogus"]) == 2
    assert "only" in capsys.readouterr().err
