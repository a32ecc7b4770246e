"""The learning case studies ``har`` and ``digits`` end to end: API, command line, bad data.
Claims about learning hold for every seed of SEEDS (each draws its own attackers, splits of the
subjects' rows, initial models and batches)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import byzmtl
from byzmtl.cli import main
from byzmtl.config import ConfigError, parse, read_toml
from byzmtl.experiment import prepare
from byzmtl.tasks import har

RESULT_FILES = {"config.toml", "metrics.csv", "summary.json", "figure.png", "network.png"}
SEEDS = range(5)


@pytest.fixture
def har_dir(har_sample: Path) -> str:
    """The in-repository HAR sample: all 30 subjects, six rows each."""
    return str(har_sample)


@pytest.fixture
def full_har_dir(full_har: Path) -> str:
    """The full HAR folder (``$BYZMTL_DATA``), for accuracy checks."""
    return str(full_har)


@pytest.fixture
def mnist_dir(mnist_sample: Path) -> str:
    """The in-repository MNIST sample: 400 training and 200 test images."""
    return str(mnist_sample)


@pytest.fixture
def render_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BYZMTL_CACHE", str(tmp_path_factory.getbasetemp() / "digits-cache"))


TINY_DIGITS = [
    "--set", "task.train_per_agent=64",
    "--set", "task.test_per_agent=32",
    "--set", "task.mnist_batch=16",
    "--set", "task.synthetic_batch=32",
]  # fmt: skip


@pytest.mark.parametrize("seed", SEEDS)
def test_har_loss_rule_beats_no_cooperation_and_average_under_10_attackers(
    full_har_dir: str, seed: int
) -> None:
    task = {"data_dir": full_har_dir, "epochs": 3}
    config = {"case": "har", "attackers": 10, "rules": ["loss", "average", "none"], "task": task}
    result = byzmtl.run(config | {"seed": seed})
    summary = result.summary
    assert summary["time_unit"] == "epoch" and summary["records"] == 3
    assert summary["agents"] == 30 and len(summary["byzantine"]) == 10
    accuracy = {rule: result.final(rule, "accuracy") for rule in result.config.rules}
    assert accuracy["loss"] > accuracy["none"] + 0.05
    assert accuracy["loss"] > accuracy["average"] + 0.2
    assert accuracy["loss"] > 0.75
    assert 0 < result.final("loss", "test_loss") < result.final("average", "test_loss")
    epochs = result.metrics[(result.metrics.rule == "loss") & (result.metrics.group == "all")]
    assert epochs["epoch"].tolist() == [1, 2, 3]


def test_har_splits_subjects_and_keeps_agent_4_when_29_attack(har_dir: str) -> None:
    experiment = prepare({"case": "har", "attackers": 29, "task": {"data_dir": har_dir}})
    case = experiment.case
    assert experiment.byzantine.tolist() == [k for k in range(30) if k != 4]
    assert experiment.graph.n_edges == 30 * 30
    assert case.n_parameters == 561 * 6 + 6 and case.n_classes == 6
    assert case.group_names[0] == "subject-1" and len(case.group_names) == 30
    # per subject: a 75/25 split of its rows; one epoch = the rounds of the smallest subject
    assert case.rounds_per_epoch == int(np.ceil(case.schedule.n_train.min() / 10))
    assert case.probability[[0, 1, 2, 3]].tolist() == pytest.approx([1 / 11, 1, 1, 1 / 11])
    assert experiment.config.nu == 0.05 and experiment.config.r0 == 1.0
    assert experiment.config.attack == "paper-scaled"


def test_cli_har_tiny_run_writes_a_results_folder(har_dir: str, tmp_path: Path) -> None:
    out = tmp_path / "har"
    argv = ["run", "har", "--data-dir", har_dir, "--epochs", "1", "--agents", "6"]
    assert main([*argv, "--attackers", "2", "--out", str(out), "--quiet", "--no-progress"]) == 0
    assert {p.name for p in out.iterdir()} >= RESULT_FILES
    summary = json.loads((out / "summary.json").read_text())
    assert summary["case"] == "har" and summary["agents"] == 6 and summary["records"] == 1
    for rule in ("loss", "distance", "average", "none"):
        final = summary["rules"][rule]["final"]
        assert 0.0 <= final["accuracy"]["min"] <= final["accuracy"]["mean"] <= 1.0
        assert final["test_loss"]["mean"] > 0
    rerun = tmp_path / "again"
    config = str(out / "config.toml")
    assert main(["run", "--config", config, "--out", str(rerun), "--quiet", "--no-progress"]) == 0
    assert (rerun / "metrics.csv").read_text() == (out / "metrics.csv").read_text()


def test_cli_digits_tiny_run_writes_a_results_folder(
    mnist_dir: str, tmp_path: Path, render_cache: None
) -> None:
    out = tmp_path / "digits"
    argv = ["run", "digits", "--data-dir", mnist_dir, "--epochs", "1", *TINY_DIGITS]
    assert main([*argv, "--attackers", "2", "--out", str(out), "--quiet", "--no-progress"]) == 0
    assert {p.name for p in out.iterdir()} >= RESULT_FILES
    summary = json.loads((out / "summary.json").read_text())
    assert summary["byzantine"] == [2, 7] and summary["groups"] == ["mnist", "synthetic"]
    for rule in ("loss", "distance", "average", "none"):
        groups = summary["rules"][rule]["groups"]
        assert set(groups) == {"mnist", "synthetic"}
        assert 0.0 <= groups["mnist"]["final"]["accuracy"]["mean"] <= 1.0


@pytest.mark.parametrize(
    ("case", "expected"),
    [("har", "UCI HAR Dataset"), ("digits", "train-images-idx3-ubyte")],
)
def test_missing_data_exits_2_naming_the_file(
    case: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    out = tmp_path / "run"
    argv = ["run", case, "--data-dir", str(missing), "--out", str(out), "--quiet"]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("byzmtl: error: ") and "\n" not in error
    assert str(missing) in error and expected in error
    assert not out.exists()


def test_malformed_data_exits_2_naming_the_line(
    har_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "UCI HAR Dataset"
    for name in ("features.txt", "activity_labels.txt"):
        (broken / name).parent.mkdir(parents=True, exist_ok=True)
        (broken / name).write_bytes((Path(har_dir) / name).read_bytes())
    for split in ("train", "test"):
        (broken / split).mkdir()
        (broken / split / f"X_{split}.txt").write_text(" 1.0" * 561 + "\n" + " 1.0" * 560 + "\n")
        (broken / split / f"y_{split}.txt").write_text("1\n2\n")
        (broken / split / f"subject_{split}.txt").write_text("1\n1\n")
    assert main(["run", "har", "--data-dir", str(tmp_path), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "X_train.txt" in error and "line 2" in error


def test_download_fetches_missing_data_only_when_asked(
    har_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetched: list[str] = []

    def fake_download(root: str) -> str:
        fetched.append(str(root))
        return har_dir

    monkeypatch.setattr(har, "download_har", fake_download)
    missing = str(tmp_path / "har")
    task = {"data_dir": missing, "epochs": 1, "agents": 3}
    experiment = prepare({"case": "har", "task": {**task, "download": True}})
    assert fetched == [missing] and experiment.case.n_agents == 3
    prepare({"case": "har", "task": {**task, "data_dir": har_dir, "download": True}})
    assert fetched == [missing]  # present data is not fetched again


def test_download_flag_belongs_to_learning_case_studies(tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    assert main(["run", "target-localization", "--download", "--out", out, "--quiet"]) == 2


@pytest.mark.parametrize(
    ("task", "field"),
    [
        ({"step_probability": [0.5, 0.0]}, "task.step_probability"),
        ({"epochs": 0}, "task.epochs"),
        ({"optimizer": "rmsprop"}, "task.optimizer"),
    ],
)
def test_bad_learning_settings_name_the_field(task: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        prepare({"case": "har", "task": task})


def test_digits_needs_an_agent() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        prepare({"case": "digits", "task": {"mnist_agents": 0, "synthetic_agents": 0}})


@pytest.mark.parametrize("case", ["har", "digits"])
def test_paper_config_files_spell_out_the_defaults(case: str) -> None:
    root = Path(__file__).resolve().parents[1]
    written = parse(read_toml(root / "configs" / f"{case}.toml")).resolved()
    default = parse({"case": case, "attackers": written.attackers}).resolved()
    assert written.task == default.task
    for field in ("attack", "attack_params", "nu", "r0", "dtype", "graph", "rules"):
        assert getattr(written, field) == getattr(default, field), field


def test_more_agents_than_subjects_is_a_data_error(
    har_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "har", "--data-dir", har_dir, "--agents", "31", "--quiet"]) == 2
    assert "at least 31 subjects" in capsys.readouterr().err


def _non_finite_attack(data_dir: str, attack: str, seed: int = 0) -> byzmtl.Result:
    task = {"data_dir": data_dir, "epochs": 1, "agents": 6}
    rules = ["loss", "none"]
    config = {"case": "har", "attack": attack, "byzantine": [1, 4], "rules": rules, "task": task}
    return byzmtl.run(config | {"seed": seed})


@pytest.mark.parametrize("attack", ["nan", "inf"])
def test_non_finite_messages_never_reach_the_loss_rules_models(har_dir: str, attack: str) -> None:
    result = _non_finite_attack(har_dir, attack)
    assert torch.isfinite(result.state.models).all()


@pytest.mark.parametrize("seed", SEEDS)
def test_loss_rule_learns_despite_non_finite_messages(full_har_dir: str, seed: int) -> None:
    result = _non_finite_attack(full_har_dir, ["nan", "inf"][seed % 2], seed)  # each on 2+ seeds
    assert torch.isfinite(result.state.models).all()
    assert result.final("loss", "accuracy") > result.final("none", "accuracy")


def test_digits_agents_tasks_and_pixel_scales(mnist_dir: str, render_cache: None) -> None:
    task = {"data_dir": mnist_dir, "train_per_agent": 64, "test_per_agent": 16}
    experiment = prepare({"case": "digits", "attackers": 2, "task": task})
    case = experiment.case
    assert experiment.byzantine.tolist() == [2, 7]
    assert case.groups.tolist() == [0] * 5 + [1] * 5 and case.group_names == ["mnist", "synthetic"]
    assert case.n_parameters == 130_890 and case.n_classes == 10
    assert case.rounds_per_epoch == 1  # 64 images: one batch of 64 (MNIST), 128 (synthetic)
    x = case.test_set[0]
    assert float(x[:5].min()) >= 0.0 and float(x[:5].max()) <= 1.0  # MNIST: [0, 1]
    assert float(x[5:].min()) < 0.0 and float(x[5:].max()) <= 1.0  # synthetic: [-1, 1]
    assert case.probability.tolist() == pytest.approx([1 / 2, 1 / 3, 1 / 4, 1 / 4, 1] * 2)
    assert experiment.config.attack_params == {"scale": 0.1, "trains": False}
