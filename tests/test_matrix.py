"""``byzmtl matrix``: the table, resuming, and bad input that exits 2 and writes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from byzmtl import matrix
from byzmtl.cli import main
from byzmtl.experiment import run

TINY = ["--agents", "20", "--iterations", "25", "--graph", "complete", "--no-progress"]
ARGS = ["target-localization", "--rules", "loss,median", "--attacks", "constant,null-space",
        "--attackers", "4", "--seeds", "0,1", *TINY]  # fmt: skip


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("matrix") / "m"
    assert main(["matrix", *ARGS, "--out", str(out), "--quiet"]) == 0
    return out


def test_matrix_writes_the_table_markdown_and_heatmap(finished: Path) -> None:
    table = pd.read_csv(finished / "matrix.csv")
    assert {"rule", "attack", "loss_mean", "loss_worst", "msd_mean", "msd_mean_sd"} <= set(
        table.columns
    )
    assert {"byzantine_weight", "own_task_weight", "regret", "loss_vs_none"} <= set(table.columns)
    assert sorted(zip(table["rule"], table["attack"], strict=True)) == sorted(
        (rule, attack)
        for rule in ("loss", "median", "none")
        for attack in ("none", "constant", "null-space")
    )
    assert (table["seeds"] == 2).all()
    none_rows = table[table["rule"] == "none"]
    np.testing.assert_allclose(none_rows["loss_vs_none"], 1.0)
    markdown = (finished / "matrix.md").read_text()
    assert "## msd, mean over normal agents" in markdown and "| loss | " in markdown
    assert (finished / "matrix.png").stat().st_size > 10_000
    assert len(list((finished / "cells").glob("*.json"))) == 6


def test_a_cell_is_the_run_with_the_same_settings(finished: Path) -> None:
    table = pd.read_csv(finished / "matrix.csv").set_index(["rule", "attack"])
    config = {
        "case": "target-localization", "rules": ["loss", "median", "none"], "attackers": 4,
        "attack": "null-space", "task": {"agents": 20, "iterations": 25},
        "graph": {"kind": "complete"},
    }  # fmt: skip
    finals = [run(config | {"seed": seed}).final("median", "msd") for seed in (0, 1)]
    row = table.loc[("median", "null-space")]
    assert row["msd_mean"] == pytest.approx(np.mean(finals))
    assert row["msd_mean_sd"] == pytest.approx(np.std(finals, ddof=1))
    worst = [run(config | {"seed": s}).final("loss", "loss", "max") for s in (0, 1)]
    assert table.loc[("loss", "null-space")]["loss_worst"] == pytest.approx(np.mean(worst))


def test_an_interrupted_matrix_resumes(finished: Path, tmp_path: Path) -> None:
    interrupted = tmp_path / "m"  # a copy: the module's finished matrix stays as it was
    shutil.copytree(finished, interrupted)
    (interrupted / "cells" / "constant-seed1.json").unlink()
    lines: list[str] = []
    base = {"case": "target-localization", "attackers": 4, "task": {"agents": 20,
            "iterations": 25}, "graph": {"kind": "complete"}}  # fmt: skip
    plan = matrix.plan(base, ["loss", "median"], ["constant", "null-space"], [0, 1], interrupted)
    matrix.execute(plan, progress=False, log=lines.append)
    assert len(lines) == 6
    assert [line for line in lines if "skipped" not in line] == [lines[3]]
    assert lines[3].startswith("[4/6] constant, seed 1: ")
    # another rule: the cells lack it, so they run again with it
    plan = matrix.plan(base, ["loss", "median", "krum"], ["constant"], [0], interrupted)
    lines.clear()
    table = matrix.execute(plan, progress=False, log=lines.append)
    assert not any("skipped" in line for line in lines) and "krum" in set(table["rule"])
    stored = json.loads((interrupted / "cells" / "constant-seed0.json").read_text())
    assert set(stored["summary"]["rules"]) == {"loss", "median", "krum", "none"}


def test_all_selects_every_rule_and_attack_and_skips_what_cannot_run(tmp_path: Path) -> None:
    base = {"case": "target-localization", "attackers": 4, "task": {"agents": 20,
            "iterations": 5}, "graph": {"kind": "complete"},
            "attack_params": {"null-space": {"max_dimension": 1}}}  # fmt: skip
    plan = matrix.plan(base, ["all"], ["all"], [0], tmp_path / "m")
    assert "none" in plan.rules and "hardened-loss" in plan.rules and len(plan.rules) >= 12
    assert "null-space" in plan.skipped and "null-space" not in plan.attacks
    assert plan.attacks[0] == "none" and "adaptive" in plan.attacks
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--rules", "loss,nope"], "rules: unknown rule 'nope'"),
        (["--attacks", "zap"], "attacks: unknown attack 'zap'"),
        (["--attack-param", "alie.z=1"], "attack_params.alie: not an attack of this matrix"),
        (["--attack-param", "constant.nope=1"], "attack_params.constant: attack 'constant' has"),
        (["--seed", "3"], "seed: a matrix takes --seeds"),
        (["--nu", "2"], "nu"),
        (["--attackers", "0"], "attackers: a matrix needs attackers"),
        (["--set", "procs=2"], "procs: a matrix runs its cells in this process"),
        (["--set", "checkpoint_every=2"], "checkpoint_every: a matrix resumes cell by cell"),
        (["--rules", "krum", "--set", "rule_params.krum.f=9"], "rules: krum: agent 0 has"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, extra, message) -> None:
    out = tmp_path / "m"
    args = ["matrix", "target-localization", "--attacks", "constant", "--attackers", "4",
            "--seeds", "0", *TINY, "--out", str(out), *extra]  # fmt: skip
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_folder_that_is_not_a_matrix_is_refused(tmp_path, capsys) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "summary.json").write_text("{}")
    args = ["matrix", "target-localization", "--attacks", "constant", "--attackers", "4",
            "--seeds", "0", *TINY, "--out", str(tmp_path / "m")]  # fmt: skip
    assert main(args) == 2
    assert "holds files that are not a matrix" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--quiet"]) == 2  # --overwrite replaces only a matrix
    assert "holds files that are not a matrix" in capsys.readouterr().err
    assert (tmp_path / "m" / "summary.json").read_text() == "{}"
