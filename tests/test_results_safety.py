"""A run never loses its result: writers killed at any moment, concurrent writers, default names,
refused destinations, figures that cannot be drawn, strict JSON (see byzmtl.results)."""

from __future__ import annotations

import errno
import json
import math
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tqdm import tqdm

import byzmtl
from byzmtl.cli import main

SMALL = ["target-localization", "--agents", "30", "--iterations", "20", "--rules", "loss,none",
         "--no-progress", "--quiet"]  # fmt: skip
TINY_MATRIX = ["target-localization", "--agents", "20", "--iterations", "25", "--graph",
               "complete", "--attackers", "4", "--seeds", "0", "--no-progress",
               "--quiet"]  # fmt: skip
DIVERGING = ["--agents", "50", "--iterations", "30", "--attackers", "25", "--dtype", "float64"]
PLUGIN = Path(__file__).with_name("writer_plugin.py")


def reject(constant: str) -> None:
    raise AssertionError(f"not strict JSON: {constant}")


def strict(path: Path) -> Any:
    return json.loads(path.read_text(), parse_constant=reject)


def contents(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name: bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A whole run (seed 0) of the small command."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(["run", *SMALL, "--out", str(out)]) == 0
    return out


def seed_of_whole_run(folder: Path, reference: Path) -> int:
    """The seed of the run in ``folder`` after checking it is whole: the files of the
    ``reference`` run, every figure drawn, a metrics table of every iteration."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in reference.iterdir())
    summary = strict(folder / "summary.json")
    metrics = pd.read_csv(folder / "metrics.csv")
    assert len(metrics[(metrics["rule"] == "loss") & (metrics["group"] == "all")]) == 20
    assert summary["warnings"] == []
    return int(summary["seed"])


def _byzmtl(args: list[str], cwd: Path, moments: str, stderr: Path) -> None:
    """A child process: ``byzmtl ARGS`` in ``cwd`` with tests/writer_plugin.py at ``moments``."""
    os.environ.update(OMP_NUM_THREADS="1", BYZMTL_TEST_MOMENTS=moments)
    os.environ["BYZMTL_TEST_RELEASE"] = str(cwd / "release")
    os.chdir(cwd)
    os.dup2(os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
    tqdm.set_lock(threading.RLock())  # its default lock is a semaphore a SIGKILL would leak
    sys.exit(main([*args, "--threads", "1", "--plugin", str(PLUGIN)]))


@pytest.fixture
def processes() -> Iterator[Callable[..., Any]]:
    """Start ``byzmtl`` commands in child processes (see :func:`_byzmtl`), forked from one server
    process that has imported byzmtl (and this module) once: a child starts in milliseconds
    where a fresh interpreter takes seconds to import torch and matplotlib. Its stderr goes to
    ``cwd/LOG.err``."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__, "byzmtl.plots", "byzmtl.matrix"])
    started: list[Any] = []

    def start(args: list[str], cwd: Path, moments: str = "", log: str = "") -> Any:
        stderr = cwd / f"{log or len(started)}.err"
        process = context.Process(target=_byzmtl, args=(args, cwd, moments, stderr))
        process.start()
        started.append(process)
        return process

    yield start
    for process in started:
        if process.exitcode is None:
            process.kill()
        process.join()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_a_writer_killed_at_any_moment_loses_no_run(
    tmp_path: Path, monkeypatch, processes, reference: Path
) -> None:
    runs = tmp_path / "runs"
    old = contents(reference)
    moments = {  # name: the plugin's moment (see tests/writer_plugin.py), or none: killed below
        "computing": "hold",
        "writing": "",
        "writing-later": "",
        "before-commit": "kill-before-commit",
        "after-swap": "kill-after-swap",
        "between-renames": "kill-between-renames",
    }
    writers = {}
    for name, moment in moments.items():
        (runs / name).mkdir(parents=True)
        for file, data in old.items():
            (runs / name / file).write_bytes(data)
        args = ["run", *SMALL, "--seed", "1", "--out", f"runs/{name}", "--overwrite"]
        writers[name] = processes(args, tmp_path, moment, log=name)

    def staged(name: str) -> bool:
        return any(runs.glob(f".{name}.byzmtl-staging-*"))

    def set_aside(name: str) -> bool:  # a staging folder, or an old copy without the exchange
        return staged(name) or any(runs.glob(f".{name}.byzmtl-old-*"))

    triggers = {  # kill this long after the file appears: the lock, a staging folder
        "computing": (0.1, lambda: (runs / ".computing.byzmtl-lock").exists()),
        "writing": (0.0, lambda: staged("writing")),
        "writing-later": (0.3, lambda: staged("writing-later")),
    }
    seen: dict[str, float] = {}

    def kill_on_time() -> bool:
        for name, (delay, trigger) in triggers.items():
            if name not in seen and trigger():
                seen[name] = time.monotonic()
            due = name in seen and time.monotonic() >= seen[name] + delay
            if due and writers[name].exitcode is None:
                writers[name].kill()
        return all(writer.exitcode is not None for writer in writers.values())

    wait_for(kill_on_time, "the writers to end")
    ends = {name: {-signal.SIGKILL} for name in moments} | {"writing-later": {0, -signal.SIGKILL}}
    for name, writer in writers.items():
        assert writer.exitcode in ends[name], (tmp_path / f"{name}.err").read_text()

    for name in ("computing", "writing", "before-commit"):  # the old run, untouched
        assert contents(runs / name) == old, name
    late = seed_of_whole_run(runs / "writing-later", reference)
    assert late == 1 or contents(runs / "writing-later") == old
    assert seed_of_whole_run(runs / "after-swap", reference) == 1
    assert not (runs / "between-renames").exists()  # the window two renames leave
    (kept,) = runs.glob(".between-renames.byzmtl-old-*")
    assert contents(kept) == old
    for name in ("writing", "before-commit", "after-swap"):
        assert set_aside(name), f"{name}: killed before it staged anything"

    # the next claim of a destination clears its leftovers and puts back a run left aside
    assert main(["run", *SMALL, "--out", str(runs / "between-renames")]) == 2
    assert contents(runs / "between-renames") == old
    again = ["run", *SMALL, "--seed", "2", "--out", str(runs / "after-swap"), "--overwrite"]
    assert main(again) == 0
    assert seed_of_whole_run(runs / "after-swap", reference) == 2
    assert not set_aside("after-swap")
    # and a default-named run clears those of every destination nobody holds
    monkeypatch.chdir(tmp_path)
    assert main(["run", *SMALL, "--seed", "3"]) == 0
    assert leftovers(runs) == []
    (fresh,) = runs.glob("target-localization-*")
    assert seed_of_whole_run(fresh, reference) == 3


def test_a_second_writer_fails_at_once_and_deletes_nothing(
    tmp_path: Path, processes, reference: Path
) -> None:
    writers = [processes(["run", *SMALL, "--out", "run"], tmp_path, "hold") for _ in range(2)]
    wait_for(lambda: any(w.exitcode is not None for w in writers), "one writer to give up")
    (loser,) = (w for w in writers if w.exitcode is not None)
    (winner,) = (w for w in writers if w is not loser)
    assert winner.exitcode is None  # the loser gave up before the winner computed anything
    (tmp_path / "release").touch()
    winner.join(60)
    assert (winner.exitcode, loser.exitcode) == (0, 2)
    error = (tmp_path / f"{writers.index(loser)}.err").read_text()
    assert error.startswith("byzmtl: error: out: run is being written by another byzmtl")
    assert len(error.strip().splitlines()) == 1
    assert seed_of_whole_run(tmp_path / "run", reference) == 0
    assert leftovers(tmp_path) == []


def test_default_names_started_in_the_same_second_never_collide(
    tmp_path: Path, processes, reference: Path
) -> None:
    writers = [processes(["run", *SMALL], tmp_path, "hold,fixed-time") for _ in range(2)]
    base = "target-localization-20000101-000000"
    names = [base, f"{base}-2"]
    runs = tmp_path / "runs"
    wait_for(
        lambda: (
            all((runs / f".{name}.byzmtl-lock").exists() for name in names)
            or any(w.exitcode is not None for w in writers)
        ),
        "both writers to claim a name",
    )
    (tmp_path / "release").touch()
    for writer in writers:
        writer.join(60)
    assert [w.exitcode for w in writers] == [0, 0]
    assert sorted(p.name for p in runs.iterdir()) == names
    assert [seed_of_whole_run(runs / name, reference) for name in names] == [0, 0]


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"/"
            for p in folder.rglob("*")}  # fmt: skip


@pytest.mark.parametrize(
    ("out", "overwrite", "message"),
    [
        ("file/sub", False, "exists and is not a folder"),
        ("file", True, "exists and is not a folder"),
        (".", True, "contains the current folder"),
        ("..", True, "contains the current folder"),
        ("notes", True, "holds files that are not a run (--overwrite replaces only a run)"),
        ("notes", False, "holds files that are not a run"),
        ("claimed", False, "is being written by another byzmtl process"),
    ],
)
def test_a_destination_is_refused_before_the_computation(
    tmp_path: Path, monkeypatch, capsys, out: str, overwrite: bool, message: str
) -> None:
    from byzmtl.destination import claim
    from byzmtl.results import RUN

    work = tmp_path / "work"
    (work / "notes").mkdir(parents=True)
    (work / "notes" / "todo.txt").write_text("mine")
    (work / "file").write_text("a file")
    monkeypatch.chdir(work)
    monkeypatch.setattr("byzmtl.experiment.run", lambda *a, **k: pytest.fail("computed"))
    before = tree(tmp_path)
    with claim(Path("held"), False, RUN):  # as another process would hold it
        args = ["run", *SMALL, "--out", "held" if out == "claimed" else out]
        assert main([*args, *["--overwrite"] * overwrite]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and error.startswith("byzmtl: error: out: ")
    assert message in error
    assert tree(tmp_path) == before  # nothing written, nothing deleted


def test_a_figure_that_cannot_be_drawn_is_left_out_with_a_warning(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("no figure today\nsecond line")

    monkeypatch.setattr("byzmtl.plots.redraw.metrics_figure", fail)
    out = tmp_path / "run"
    assert main(["run", *SMALL, "--out", str(out)]) == 0
    warning = "figure: not drawn (RuntimeError: no figure today)"
    assert capsys.readouterr().err == f"byzmtl: warning: {warning}\n"
    summary = strict(out / "summary.json")
    assert summary["warnings"] == [warning]
    assert summary["rules"]["loss"]["final"]["loss"]["mean"] > 0
    names = {p.name for p in out.iterdir()}
    assert {"config.toml", "metrics.csv", "diagnostics.csv", "network.png"} <= names
    assert "figure.png" not in names


def _fills_the_disk(result: Any, folder: Path) -> None:
    """Writing a run's tables on a disk that fills after the first file."""
    (folder / "config.toml").write_text(result.config.to_toml())
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_full_disk_is_one_line_and_leaves_the_destination_as_it_was(
    tmp_path: Path, monkeypatch, capsys, reference: Path, overwrite: bool
) -> None:
    out = tmp_path / "run"
    if overwrite:  # an earlier run there, which must survive the failed write
        shutil.copytree(reference, out)
    before = tree(tmp_path)

    monkeypatch.setattr("byzmtl.results._write_tables", _fills_the_disk)
    assert main(["run", *SMALL, "--out", str(out), *["--overwrite"] * overwrite]) == 2
    error = capsys.readouterr().err
    assert error == f"byzmtl: error: out: cannot write {out}: No space left on device\n"
    assert tree(tmp_path) == before  # no staging folder left, the earlier run untouched


def test_a_checkpointed_run_that_cannot_be_written_resumes_to_the_same_tables(
    tmp_path: Path, monkeypatch, reference: Path
) -> None:
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr("byzmtl.results._write_tables", _fills_the_disk)
        assert main(["run", *SMALL, "--checkpoint-every", "7", "--out", str(out)]) == 2
    assert (out / "checkpoint" / "manifest.json").is_file()  # round 14's, kept
    assert main(["run", "--resume", str(out), "--quiet", "--no-progress"]) == 0
    for name in ("metrics.csv", "diagnostics.csv"):
        assert (out / name).read_bytes() == (reference / name).read_bytes()


def test_the_diverging_run_of_the_review_keeps_its_tables_in_strict_json(tmp_path: Path) -> None:
    out = tmp_path / "run"
    # averaging 1e301 messages: finite models whose losses (about 1e602) overflow to inf
    args = ["run", "target-localization", *DIVERGING, "--rules", "average", "--attack",
            "constant", "--attack-param", "value=1e301", "--attack-param", "spread=0"]  # fmt: skip
    assert main([*args, "--out", str(out), "--no-progress", "--quiet"]) == 0
    summary = strict(out / "summary.json")
    final = summary["rules"]["average"]["final"]["loss"]
    assert final and all(value is None for value in final.values())
    named = summary["non_finite"]
    assert {f"rules.average.final.loss.{key}" for key in final} <= set(named)
    assert named["rules.average.final.loss.mean"] == "inf"
    metrics = pd.read_csv(out / "metrics.csv")
    assert len(metrics[metrics["group"] == "all"]) == 30
    drawn = (out / "figure.png").exists()
    assert drawn != any(line.startswith("figure: not drawn") for line in summary["warnings"])


@pytest.fixture(scope="module")
def small_result() -> Any:
    return byzmtl.run({"case": "target-localization", "rules": ["loss", "none"], "seed": 4,
                       "task": {"agents": 30, "iterations": 20}})  # fmt: skip


def test_result_save_has_the_same_guarantees(tmp_path: Path, monkeypatch, small_result) -> None:
    from byzmtl import destination
    from byzmtl.config import ConfigError
    from byzmtl.results import RUN, FigureWarning

    out = tmp_path / "run"
    assert small_result.save(out) == out
    with pytest.raises(ConfigError, match="already holds a run"):
        small_result.save(out)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds files that are not a run"):
        small_result.save(notes, overwrite=True)
    assert (notes / "todo.txt").read_text() == "mine"
    with (
        destination.claim(out, True, RUN),
        pytest.raises(ConfigError, match="being written by another byzmtl process"),
    ):
        small_result.save(out, overwrite=True)
    (out / "summary.json").write_text(
        (out / "summary.json").read_text().replace('"seed": 4', '"seed": 0')
    )
    monkeypatch.setattr(destination, "exchange", lambda a, b: False)  # two renames instead
    monkeypatch.setattr("byzmtl.plots.redraw.network_figure", lambda *a, **k: 1 / 0)
    with pytest.warns(FigureWarning, match=r"network: not drawn \(ZeroDivisionError"):
        small_result.save(out, overwrite=True)
    assert strict(out / "summary.json")["seed"] == 4
    assert not (out / "network.png").exists() and (out / "figure.png").exists()
    assert leftovers(tmp_path) == []


finite_or_not = st.floats() | st.integers() | st.text(max_size=3) | st.none() | st.booleans()


@given(st.recursive(finite_or_not, lambda inner: st.lists(inner) | st.dictionaries(
    st.text(max_size=3), inner), max_leaves=20))  # fmt: skip
def test_strict_json_is_json_with_non_finite_numbers_as_null(value: Any) -> None:
    from byzmtl.results import strict_json

    def expected(item: Any) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {key: expected(inner) for key, inner in item.items()}
        if isinstance(item, list):
            return [expected(inner) for inner in item]
        return item

    assert json.loads(strict_json(value), parse_constant=reject) == expected(value)


@given(st.recursive(finite_or_not, lambda inner: st.lists(inner) | st.dictionaries(
    st.text("abc", max_size=3), inner), max_leaves=20))  # fmt: skip
def test_every_non_finite_number_is_named_where_it_was(value: Any) -> None:
    from byzmtl.results import non_finite

    def floats(item: Any) -> list[float]:
        if isinstance(item, float):
            return [] if math.isfinite(item) else [item]
        inner = item.values() if isinstance(item, dict) else item if isinstance(item, list) else []
        return [number for part in inner for number in floats(part)]

    def at(item: Any, path: str) -> Any:
        for key in path.split(".") if path else []:
            item = item[int(key)] if isinstance(item, list) else item[key]
        return item

    named = non_finite(value)
    assert sorted(named.values()) == sorted(str(number) for number in floats(value))
    for path, said in named.items():
        assert str(at(value, path)) == said


def test_matrix_overwrite_keeps_the_old_matrix_until_the_new_one_is_complete(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    from byzmtl import matrix

    out = tmp_path / "m"
    args = ["matrix", *TINY_MATRIX, "--attacks", "constant", "--out", str(out)]
    assert main([*args, "--rules", "loss"]) == 0
    old = tree(out)
    base = {"case": "target-localization", "attackers": 4, "task": {"agents": 20,
            "iterations": 25}, "graph": {"kind": "complete"}}  # fmt: skip
    plan = matrix.plan(base, ["loss", "median"], ["constant"], [0], out, overwrite=True)
    calls = []

    def run_then_fail(*a: Any, **k: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return byzmtl.experiment.run(*a, **k)

    monkeypatch.setattr(matrix, "run", run_then_fail)
    with pytest.raises(KeyboardInterrupt):
        matrix.execute(plan, overwrite=True, progress=False, log=lambda line: None)
    assert tree(out) == old and leftovers(tmp_path) == []
    monkeypatch.undo()
    monkeypatch.setattr("byzmtl.plots.matrix_figure", lambda *a, **k: 1 / 0)
    assert main([*args, "--rules", "loss,median", "--overwrite"]) == 0
    assert "byzmtl: warning: matrix.png: not drawn (ZeroDivisionError" in capsys.readouterr().err
    assert sorted(strict(out / "cells" / "constant-seed0.json")["summary"]["rules"]) == [
        "loss", "median", "none"]  # fmt: skip
    assert not (out / "matrix.png").exists() and (out / "matrix.csv").exists()
    assert leftovers(tmp_path) == [] and leftovers(out) == []


def test_a_matrix_has_one_writer_and_strict_json_cells(tmp_path: Path, capsys) -> None:
    from byzmtl.destination import claim
    from byzmtl.matrix import MATRIX

    out = tmp_path / "m"
    args = ["matrix", "target-localization", *DIVERGING, "--seeds", "0", "--rules",
            "average", "--attacks", "constant", "--attack-param", "constant.value=1e301",
            "--attack-param", "constant.spread=0", "--no-progress", "--quiet",
            "--out", str(out)]  # fmt: skip
    with claim(out, False, MATRIX):
        assert main(args) == 2
    assert "is being written by another byzmtl process" in capsys.readouterr().err
    assert not out.exists()
    assert main(args) == 0
    stored = strict(out / "cells" / "constant-seed0.json")
    assert stored["summary"]["rules"]["average"]["final"]["loss"]["mean"] is None
    assert (out / "matrix.md").exists() and leftovers(out) == []
