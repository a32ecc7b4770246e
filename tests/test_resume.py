"""Runs that survive kill -9: ``byzmtl run --checkpoint-every K`` killed with SIGKILL and continued
with ``byzmtl run --resume DIR`` ends with the uninterrupted run's metrics.csv, diagnostics.csv,
figures and summary.json (timings aside: ``wall_seconds``, ``compute_seconds``), byte for byte;
on target localization, HAR and digits (the in-repository samples), in subprocesses. In-process:
every kill point of several checkpoint periods, and a checkpoint write that dies at any of its
steps leaves the previous checkpoint or the new one."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from byzmtl.checkpoints import CheckpointError, CheckpointFolder
from byzmtl.cli import main
from byzmtl.config import ConfigError, read_toml
from byzmtl.experiment import Result, prepare, run

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "tests" / "hold_plugin.py"
SAMPLES = ROOT / "tests" / "data"
TIMINGS = ("wall_seconds", "compute_seconds")
QUIET = ["--no-progress", "--quiet"]
TL = ["target-localization", "--agents", "30", "--iterations", "40", "--attackers", "4"]
TL_RULES = ["--rules", "loss,distance,average,none,median,trimmed-mean"]
HAR = ["har", "--data-dir", str(SAMPLES / "har-recreated" / "UCI HAR Dataset"), "--agents", "6"]
DIGITS = [
    "digits", "--data-dir", str(SAMPLES / "mnist"), "--byzantine", "1",
    "--set", "task.mnist_agents=2", "--set", "task.synthetic_agents=2",
    "--set", "task.train_per_agent=64", "--set", "task.test_per_agent=32",
    "--set", "task.mnist_batch=16", "--set", "task.synthetic_batch=32",
]  # fmt: skip


def environment(tmp: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "BYZMTL_CACHE": str(tmp / "digits-cache"), **extra}


def byzmtl(argv: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    """``byzmtl ARGV`` in a new process, in ``tmp``."""
    command = [sys.executable, "-m", "byzmtl", *argv]
    return subprocess.run(
        command, cwd=tmp, env=environment(tmp), capture_output=True, text=True, timeout=300
    )


def killed(
    argv: list[str], tmp: Path, hold: int, while_held: Callable[[], None] | None = None
) -> subprocess.Popen[str]:
    """Start ``byzmtl run ARGV`` in a new process, wait until it holds still at its ``hold``-th
    checkpoint (0: before the first; see hold_plugin.py), or until its first checkpoint is seen
    where ``hold`` is negative (it does not hold still then), call ``while_held``, and SIGKILL
    it."""
    held = tmp / f"held-{time.monotonic_ns()}"
    command = [sys.executable, "-m", "byzmtl", "run", *argv, "--plugin", str(PLUGIN)]
    env = environment(tmp, BYZMTL_TEST_HOLD=str(max(hold, -1)), BYZMTL_TEST_HELD=str(held))
    process = subprocess.Popen(command, cwd=tmp, env=env, stderr=subprocess.PIPE, text=True)
    out = Path(argv[argv.index("--out") + 1])
    try:
        deadline = time.monotonic() + 240
        while not (held.exists() if hold >= 0 else (out / "checkpoint/manifest.json").exists()):
            if process.poll() is not None:
                if hold < 0 and process.returncode == 0:
                    return process  # it finished first: also a possible instant
                raise AssertionError(f"the run ended before its kill: {process.stderr.read()}")  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the run never reached the point of its kill"
            time.sleep(0.01)
        if while_held is not None:
            while_held()
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()  # type: ignore[union-attr]
    return process


def reference(argv: list[str], out: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The uninterrupted run of ``byzmtl run ARGV`` without checkpoints, in this process (one
    torch thread, as the subprocesses run with ``--threads 1``)."""
    monkeypatch.setenv("BYZMTL_CACHE", str(out.parent / "digits-cache"))
    assert main(["run", *argv, "--out", str(out), *QUIET]) == 0
    return out


def without_timings(folder: Path) -> dict[str, Any]:
    summary = json.loads((folder / "summary.json").read_text())
    assert all(summary.pop(key) >= 0 for key in TIMINGS)
    return summary


def assert_same_run(resumed: Path, straight: Path, procs: int = 1) -> None:
    """Same files; the same tables, figures and summary (timings aside), byte for byte; the
    same configuration but for ``checkpoint_every`` (and ``procs``: the resumed run's)."""
    names = {p.name for p in resumed.iterdir()}
    assert names == {p.name for p in straight.iterdir()}
    assert {"metrics.csv", "diagnostics.csv", "summary.json", "figure.png"} <= names
    for name in sorted(names - {"summary.json", "config.toml"}):
        assert (resumed / name).read_bytes() == (straight / name).read_bytes(), name
    assert without_timings(resumed) == without_timings(straight)
    config, expected = read_toml(resumed / "config.toml"), read_toml(straight / "config.toml")
    assert config.pop("checkpoint_every") >= 1
    assert (config.pop("procs"), expected.pop("procs")) == (procs, 1)
    assert config == expected


def assert_interrupted_at(out: Path, round_: int | None = None) -> int:
    """``out`` is an interrupted run (no summary.json) whose checkpoint is after ``round_``
    (any, if None); returns that round."""
    assert not (out / "summary.json").exists() and (out / "config.toml").is_file()
    manifest = json.loads((out / "checkpoint" / "manifest.json").read_text())
    assert round_ is None or manifest["round"] == round_
    assert all((out / "checkpoint" / name).is_file() for name in manifest["files"])
    return int(manifest["round"])


def resume(out: Path, tmp: Path, capsys: pytest.CaptureFixture[str] | None = None) -> None:
    """``byzmtl run --resume OUT`` in a new process, or in this one where ``capsys`` is given."""
    argv = ["run", "--resume", str(out), *QUIET]
    if capsys is None:
        done = byzmtl(argv, tmp)
        assert done.returncode == 0, done.stderr
        err = done.stderr
    else:
        capsys.readouterr()
        assert main(argv) == 0
        err = capsys.readouterr().err
    assert err == ""  # same threads as the checkpointed run: no warning
    assert not (out / "checkpoint").exists()


def test_target_localization_killed_after_a_checkpoint_resumes_to_the_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tl"
    hold = 2  # the second checkpoint, after round 14 (every kill point: in-process, below)
    argv = [*TL, *TL_RULES, "--checkpoint-every", "7", "--threads", "1"]

    def resume_while_it_runs() -> None:
        err = one_line_error(["run", "--resume", str(out)], capsys)
        assert "is being written by another byzmtl process" in err

    process = killed([*argv, "--out", str(out), *QUIET], tmp_path, hold, resume_while_it_runs)
    assert process.returncode == -signal.SIGKILL
    assert_interrupted_at(out, 7 * hold)
    resume(out, tmp_path)
    assert_same_run(out, reference([*TL, *TL_RULES], tmp_path / "straight", monkeypatch))
    summary = json.loads((out / "summary.json").read_text())
    finals = {rule: entry["final"]["loss"]["mean"] for rule, entry in summary["rules"].items()}
    assert len(set(finals.values())) == len(finals)  # not vacuous: the rules differ
    assert summary["records"] == 40


def test_two_processes_killed_after_a_checkpoint_resume_to_the_one_process_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--procs 2`` with checkpoints, the launcher and both ranks killed with SIGKILL while
    rank 0 holds at its second checkpoint; ``--resume`` continues it with two processes (the
    run's own) and ends with the one-process run's tables, figures and summary."""
    out = tmp_path / "tl2"
    shards = ["--set", "shard_edges=200"]  # several shards: both ranks weigh
    argv = [*TL, *TL_RULES, *shards, "--checkpoint-every", "7", "--threads", "1"]
    held = tmp_path / "held"
    command = [sys.executable, "-m", "byzmtl", "run", *argv, "--procs", "2", "--out", str(out),
               *QUIET, "--plugin", str(PLUGIN)]  # fmt: skip
    env = environment(tmp_path, BYZMTL_TEST_HOLD="2", BYZMTL_TEST_HELD=str(held))
    process = subprocess.Popen(command, cwd=tmp_path, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not held.exists():
            assert process.poll() is None, "the run ended before its kill"
            assert time.monotonic() < deadline, "the run never reached its second checkpoint"
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert_interrupted_at(out, 14)
    assert read_toml(out / "config.toml")["procs"] == 2
    manifest = json.loads((out / "checkpoint" / "manifest.json").read_text())
    assert manifest["files"] == ["rank0-000014.pt", "rank1-000014.pt"]  # partitioned: a part each
    parts = [torch.load(out / "checkpoint" / name)["state"] for name in manifest["files"]]
    agents = [part["models"].shape[1] for part in parts]
    assert sum(agents) == 30 and min(agents) > 0, agents  # each rank's own agents only
    resume(out, tmp_path)
    straight = reference([*TL, *TL_RULES, *shards], tmp_path / "straight", monkeypatch)
    assert_same_run(out, straight, procs=2)


FAILING_WRITE = """
from byzmtl import checkpoints

_write_durably, _written = checkpoints._write_durably, [0]


def _failing(path, fill):
    if path.name.startswith("{failing}-"):
        _written[0] += 1
        if _written[0] == 2:
            raise OSError(28, "No space left on device (a test)")
    return _write_durably(path, fill)


checkpoints._write_durably = _failing
"""


@pytest.mark.parametrize(("procs", "failing"), [(1, "rank0"), (2, "rank0"), (2, "rank1")])
def test_a_checkpoint_the_disk_refuses_is_one_line_and_stops_every_rank(
    tmp_path: Path, procs: int, failing: str
) -> None:
    """The second checkpoint's file of rank 0, or of rank 1 (written by rank 0) fails: one
    line, every rank stops, and the first checkpoint stays, whole (a file per rank)."""
    plugin = tmp_path / "failing_write.py"
    plugin.write_text(FAILING_WRITE.replace("{failing}", failing))
    out = tmp_path / "tl"
    argv = ["run", *TL, "--set", "shard_edges=200", "--checkpoint-every", "7", "--procs",
            str(procs), "--out", str(out), *QUIET, "--plugin", str(plugin)]  # fmt: skip
    started = time.monotonic()
    done = byzmtl(argv, tmp_path)
    assert time.monotonic() - started < 60  # no rank waits for the peer's timeout (600 s)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "byzmtl: error: checkpoint: the checkpoint after round 14 could not be written ([Errno "
        "28] No space left on device (a test)); the checkpoint after round 7 of 40 is in "
        f"{out}; continue with: byzmtl run --resume {out}"
    ]
    assert_interrupted_at(out, 7)  # the first checkpoint stays: the run can be resumed
    files = [f"rank{rank}-000007.pt" for rank in range(procs)]
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == ["manifest.json", *files]


def test_a_kill_at_any_instant_leaves_a_run_that_resumes_or_is_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL at an instant the run does not choose (checkpointing every round, killed as soon
    as the first checkpoint is seen, often in the middle of another's write): the folder is an
    interrupted run with a whole checkpoint, or the finished run."""
    out = tmp_path / "tl"
    argv = [*TL, "--checkpoint-every", "1", "--threads", "1", "--out", str(out), *QUIET]
    killed(argv, tmp_path, hold=-1)
    if not (out / "summary.json").exists():
        assert 1 <= assert_interrupted_at(out) < 40
        resume(out, tmp_path, capsys)
    assert_same_run(out, reference(TL, tmp_path / "straight", monkeypatch))


def test_har_killed_after_its_first_epoch_resumes_to_the_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "har"
    argv = [*HAR, "--epochs", "3", "--attackers", "2", "--threads", "1"]
    killed([*argv, "--checkpoint-every", "1", "--out", str(out), *QUIET], tmp_path, hold=1)
    rounds_per_epoch = prepare(read_toml(out / "config.toml")).case.rounds_per_epoch  # type: ignore[attr-defined]
    assert_interrupted_at(out, rounds_per_epoch)
    resume(out, tmp_path, capsys)
    assert_same_run(out, reference(argv, tmp_path / "straight", monkeypatch))
    assert json.loads((out / "summary.json").read_text())["records"] == 3


def test_digits_killed_after_its_first_epoch_resumes_to_the_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "digits"
    argv = [*DIGITS, "--epochs", "2", "--threads", "1"]
    killed([*argv, "--checkpoint-every", "1", "--out", str(out), *QUIET], tmp_path, hold=1)
    assert_interrupted_at(out)
    monkeypatch.setenv("BYZMTL_CACHE", str(tmp_path / "digits-cache"))
    resume(out, tmp_path, capsys)
    assert_same_run(out, reference(argv, tmp_path / "straight", monkeypatch))


def test_a_run_killed_before_its_first_checkpoint_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tl"
    argv = [*TL, "--checkpoint-every", "7", "--out", str(out), *QUIET]
    killed(argv, tmp_path, hold=0)
    assert (out / "checkpoint").is_dir() and not (out / "checkpoint" / "manifest.json").exists()
    err = one_line_error(["run", "--resume", str(out), *QUIET], capsys)
    assert "holds no checkpoint" in err and "--overwrite" in err  # it says how to start again
    again = main(["run", "--config", str(out / "config.toml"), "--out", str(out), "--overwrite"])
    assert again == 0 and (out / "summary.json").is_file()


def one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("byzmtl: error: ")
    return err


class Stop(Exception):
    """Stands for a kill: raised once the ``after``-th checkpoint is committed."""


class StoppingFolder(CheckpointFolder):
    def __init__(self, path: Path, after: int) -> None:
        super().__init__(path)
        self.after = after

    def write(self, *args: Any) -> None:
        super().write(*args)
        if len(self.timings) == self.after:
            raise Stop


def interrupted(tmp: Path, every: int, after: int) -> Path:
    """The folder of a run of ``byzmtl run TL --checkpoint-every EVERY`` stopped in this process
    after its ``after``-th checkpoint."""
    out = tmp / "tl"
    argv = ["run", *TL, "--checkpoint-every", str(every), "--out", str(out), *QUIET]
    stopping = mock.patch("byzmtl.resume.CheckpointFolder", lambda p, _: StoppingFolder(p, after))
    with stopping, pytest.raises(Stop):
        main(argv)
    return out


def test_resume_refuses_what_it_cannot_continue_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = interrupted(tmp_path, every=7, after=2)
    assert_interrupted_at(out, 14)
    err = one_line_error(["run", "--resume", str(out), "--seed", "0"], capsys)
    assert "--seed cannot be given with --resume" in err
    err = one_line_error(["run", "target-localization", "--resume", str(out)], capsys)
    assert "case cannot be given" in err
    err = one_line_error(["run", *TL, "--out", str(out)], capsys)
    assert f"byzmtl run --resume {out}" in err  # another run there: it says how to continue
    err = one_line_error(["run", "--resume", str(tmp_path / "nowhere")], capsys)
    assert "is not a folder" in err
    text = (out / "config.toml").read_text()
    (out / "config.toml").write_text(text.replace("seed = 0", "seed = 1"))
    err = one_line_error(["run", "--resume", str(out)], capsys)
    assert "changed since the checkpoint" in err
    (out / "config.toml").write_text(text)
    assert main(["run", "--resume", str(out), *QUIET]) == 0  # nothing was spoilt
    err = one_line_error(["run", "--resume", str(out)], capsys)
    assert "finished run" in err
    assert not (out / "checkpoint").exists()


def test_a_checkpointed_run_refuses_to_overwrite_a_finished_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tl"
    assert main(["run", *TL, "--iterations", "5", "--out", str(out), *QUIET]) == 0
    before = (out / "metrics.csv").read_bytes()
    argv = ["run", *TL, "--checkpoint-every", "7", "--out", str(out), "--overwrite"]
    assert "holds a finished run" in one_line_error(argv, capsys)
    assert (out / "metrics.csv").read_bytes() == before and not (out / "checkpoint").exists()


def test_overwrite_replaces_an_interrupted_run(tmp_path: Path) -> None:
    out = interrupted(tmp_path, every=7, after=1)
    argv = ["run", *TL, "--checkpoint-every", "5", "--out", str(out), "--overwrite", *QUIET]
    assert main(argv) == 0
    assert (out / "summary.json").is_file() and not (out / "checkpoint").exists()
    assert read_toml(out / "config.toml")["checkpoint_every"] == 5


def test_ctrl_c_says_where_the_checkpoint_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    class Interrupting(CheckpointFolder):
        def write(self, *args: Any) -> None:
            super().write(*args)
            raise KeyboardInterrupt

    out = tmp_path / "tl"
    argv = ["run", *TL, "--checkpoint-every", "7", "--out", str(out), "--no-progress"]
    with mock.patch("byzmtl.resume.CheckpointFolder", lambda p, shown: Interrupting(p, shown)):
        assert main(argv) == 130
    err = capsys.readouterr().err
    assert f"after round 7 of 40 is in {out}; continue with: byzmtl run --resume {out}" in err


TL_CONFIG = {
    "case": "target-localization",
    "task": {"agents": 30, "iterations": 40},
    "attackers": 4,
    "seed": 1,
    "rules": ["loss", "distance", "average", "none", "median"],
}


@pytest.fixture(scope="module")
def straight_tl() -> Result:
    return run(TL_CONFIG)


def assert_same_result(a: Result, b: Result) -> None:
    assert a.metrics.to_csv(index=False) == b.metrics.to_csv(index=False)
    assert a.diagnostics is not None and b.diagnostics is not None
    assert a.diagnostics.to_csv(index=False) == b.diagnostics.to_csv(index=False)
    timeless = [{k: v for k, v in r.summary.items() if k not in TIMINGS} for r in (a, b)]
    assert timeless[0] == timeless[1]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(every=st.integers(1, 39), data=st.data())
def test_every_kill_point_resumes_to_the_uninterrupted_run(
    every: int, data: st.DataObject, straight_tl: Result, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Stopped after any of its checkpoints, with any period, a run continues to the
    uninterrupted run, tables and summary (timings aside) alike."""
    after = data.draw(st.integers(1, 39 // every), label="stopped after checkpoint")
    folder = tmp_path_factory.mktemp("kill") / "checkpoint"
    folder.mkdir()
    config = {**TL_CONFIG, "checkpoint_every": every}
    with pytest.raises(Stop):
        run(config, checkpoints=StoppingFolder(folder, after))
    experiment = prepare(config)
    snapshot = CheckpointFolder(folder).read(experiment.config.to_toml())
    assert snapshot.state.iteration == every * after
    resumed = run(experiment, checkpoints=CheckpointFolder(folder), resume=snapshot)
    assert_same_result(resumed, straight_tl)
    assert resumed.summary["compute_seconds"] >= snapshot.seconds["compute"] > 0


class Death(BaseException):
    """A kill in the middle of a checkpoint's write (the step numbered ``at``)."""


@pytest.mark.parametrize("at", range(8))
def test_a_write_that_dies_at_any_step_leaves_the_old_or_the_new_checkpoint(
    at: int, tmp_path: Path
) -> None:
    """Every durable step of a checkpoint's write (rank file: write, fsync, rename, folder
    fsync; manifest: the same) may be where the process dies: the folder then reads as the
    previous checkpoint, or (once the manifest's rename is done) as the new one, whole."""
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    config = {**TL_CONFIG, "checkpoint_every": 7, "task": {"agents": 30, "iterations": 15}}
    with pytest.raises(Stop):
        run(config, checkpoints=StoppingFolder(folder, 1))
    text = prepare(config).config.to_toml()
    first = CheckpointFolder(folder).read(text)
    steps = iter(range(100))

    def dying(real: Any) -> Any:
        def step(*args: Any, **kwargs: Any) -> Any:
            if next(steps) == at:
                raise Death
            return real(*args, **kwargs)

        return step

    patches = [
        mock.patch("byzmtl.checkpoints.torch.save", dying(torch.save)),
        mock.patch("byzmtl.checkpoints.os.fsync", dying(os.fsync)),
        mock.patch("byzmtl.checkpoints.os.replace", dying(os.replace)),
    ]
    later = replace(first, state=replace(first.state, iteration=first.state.iteration + 7))
    with contextlib.ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch)
        with contextlib.suppress(Death):
            CheckpointFolder(folder).write(later, 15, text)
    # steps: rank file saved 0, fsynced 1, renamed 2, folder fsynced 3; manifest fsynced 4,
    # renamed 5 (the commit), folder fsynced 6
    expected = first if at <= 5 else later
    read = CheckpointFolder(folder).read(text)
    manifest = CheckpointFolder(folder).manifest()
    assert manifest is not None and read.state.iteration == expected.state.iteration
    assert torch.equal(read.state.models, expected.state.models)
    assert read.recorder["count"] == expected.recorder["count"] == 7
    (folder / "rank0-000099.pt").write_bytes(b"torn")  # what a kill leaves: no cleanup ran
    (folder / ".manifest.tmp-abcdefgh.json").write_text("{")
    CheckpointFolder(folder).remove_unnamed(manifest)
    assert sorted(p.name for p in folder.iterdir()) == sorted([*manifest["files"], "manifest.json"])


def test_a_corrupt_manifest_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"round": 3}')
    with pytest.raises(CheckpointError, match="is not a manifest"):
        CheckpointFolder(tmp_path).manifest()


def test_checkpoint_every_is_validated_and_needs_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tl"
    err = one_line_error(["run", *TL, "--checkpoint-every", "0", "--out", str(out)], capsys)
    assert "checkpoint_every" in err and not out.exists()
    with pytest.raises(ConfigError, match="checkpoint_every: checkpoints are written into"):
        run({**TL_CONFIG, "checkpoint_every": 5})
    config = tmp_path / "matrix.toml"
    config.write_text('case = "target-localization"\ncheckpoint_every = 5\n')
    argv = ["matrix", "--config", str(config), "--attackers", "2", "--out", str(tmp_path / "m")]
    assert "checkpoint_every: a matrix resumes cell by cell" in one_line_error(argv, capsys)


def test_resume_keeps_the_runs_threads_and_says_when_told_otherwise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = interrupted(tmp_path, every=7, after=1)
    manifest = json.loads((out / "checkpoint" / "manifest.json").read_text())
    assert manifest["threads"] == torch.get_num_threads() == 1
    capsys.readouterr()
    try:
        assert main(["run", "--resume", str(out), "--threads", "2", *QUIET]) == 0
    finally:
        torch.set_num_threads(1)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpointed with 1 threads, it continues with 2" in err


def test_a_run_that_read_relative_paths_resumes_only_where_it_started(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "ring.txt").write_text("\n".join(f"{k} {(k + 1) % 30}" for k in range(30)))
    monkeypatch.chdir(tmp_path / "here")
    out = tmp_path / "tl"
    argv = ["run", *TL, "--graph", "edgelist", "--set", "graph.path=ring.txt"]
    stopping = mock.patch("byzmtl.resume.CheckpointFolder", lambda p, _: StoppingFolder(p, 1))
    with stopping, pytest.raises(Stop):
        main([*argv, "--checkpoint-every", "7", "--out", str(out), *QUIET])
    monkeypatch.chdir(tmp_path)
    err = one_line_error(["run", "--resume", str(out)], capsys)
    assert f"graph.path = 'ring.txt' is relative to {tmp_path / 'here'}" in err
    monkeypatch.chdir(tmp_path / "here")
    assert main(["run", "--resume", str(out), *QUIET]) == 0


@pytest.mark.parametrize("change", ["edited", "gone"])
def test_a_run_is_not_continued_on_other_files_than_it_started_with(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    change: str,
) -> None:
    """The checkpoint records the fingerprints of the files the settings name (here the graph's
    edge list); a resume finds them changed or gone and refuses, in one line naming the
    setting."""
    edges = tmp_path / "ring.txt"
    edges.write_text("".join(f"{k} {(k + 1) % 30}\n" for k in range(30)))
    out = tmp_path / "tl"
    argv = ["run", *TL, "--set", "graph.kind=edgelist", "--set", f"graph.path={edges}",
            "--checkpoint-every", "7", "--out", str(out), *QUIET]  # fmt: skip
    write = CheckpointFolder.write

    def write_then_stop(self: CheckpointFolder, *args: Any) -> None:
        write(self, *args)
        raise KeyboardInterrupt  # stands for a kill after the first checkpoint

    with mock.patch.object(CheckpointFolder, "write", write_then_stop):
        assert main(argv) == 130
    manifest = json.loads((out / "checkpoint" / "manifest.json").read_text())
    assert set(manifest["inputs"]) == {"graph.path"}
    if change == "edited":
        edges.write_text(edges.read_text() + "0 15\n")
    else:
        edges.unlink()
    err = one_line_error(["run", "--resume", str(out)], capsys)
    said = "changed" if change == "edited" else "is gone"
    assert f"resume: graph.path: what it names {said}" in err
    assert_interrupted_at(out, 7)  # refused: nothing changed
