"""Every script of examples/ runs from a fresh folder, and shows what its docstring says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


def run_example(path: Path, folder: Path) -> str:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(path)],
        cwd=folder, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_runs(path: Path, tmp_path: Path) -> None:
    output = run_example(path, tmp_path)
    first = {line.split()[0]: line.split() for line in output.splitlines() if line.split()}
    if path.name == "custom_model.py":
        accuracy = {rule: float(first[rule][2]) for rule in ("loss", "none", "average")}
        assert accuracy["loss"] > accuracy["none"] > accuracy["average"]
        assert (tmp_path / "runs" / "custom-model" / "summary.json").is_file()
    if path.name == "community_tasks.py":
        msd = {rule: float(first[rule][-1]) for rule in ("loss", "none", "average")}
        assert msd["loss"] < msd["none"] < 1.0 < 10.0 < msd["average"]
