"""The command line as a process: start-up without torch, a closed pipe, Ctrl-C, progress bars,
argparse errors, ``--attack none`` (each in a subprocess, as a user meets it)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from byzmtl.version import __version__

BYZMTL = [sys.executable, "-m", "byzmtl"]
SHORT = ["run", "target-localization", "--iterations", "20", "--no-progress", "--quiet"]
PROBE = """
import sys, time
started = time.perf_counter()
from byzmtl.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as exit:
    status = exit.code
sys.stdout.flush()
print(json.dumps({"status": status, "torch": "torch" in sys.modules,
                  "seconds": time.perf_counter() - started}), file=sys.stderr)
""".replace("import sys, time", "import json, sys, time")


def byzmtl(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BYZMTL, *args], capture_output=True, text=True, timeout=120, **kwargs)


@pytest.mark.parametrize(
    "args", [["--help"], ["--version"], ["list"], ["list", "--json"], ["run", "--help"]]
)
def test_help_version_and_list_never_import_torch(args: list[str]) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60
    )
    report = json.loads(probe.stderr.strip().splitlines()[-1])
    assert report["status"] in (0, None)
    assert report["torch"] is False
    assert probe.stdout.strip()
    started = time.perf_counter()
    assert byzmtl(*args).returncode == 0
    assert time.perf_counter() - started < 1.0  # the whole process, Python's start included


def test_version() -> None:
    done = byzmtl("--version")
    assert done.returncode == 0 and done.stdout == f"byzmtl {__version__}\n"


def test_a_closed_pipe_ends_quietly() -> None:
    process = subprocess.Popen(
        [*BYZMTL, "list", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader leaves before the first line: `byzmtl list | head -0`
    error = process.stderr.read().decode()
    assert process.wait(timeout=60) in (0, 141)
    assert error == ""


def test_a_pipe_to_head_shows_the_first_lines() -> None:
    done = subprocess.run(
        f"{sys.executable} -m byzmtl list | head -3; exit ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.splitlines()[0] == "case studies:" and len(done.stdout.splitlines()) == 3
    assert done.returncode in (0, 141) and done.stderr == ""


def _interrupt(args: list[str], when, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    process = subprocess.Popen(
        [*BYZMTL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        when(process)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    return subprocess.CompletedProcess(args, process.returncode, out, err)


def _wait_for(path_test, process: subprocess.Popen, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not path_test():
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.mark.parametrize("moment", ["imports", "computing"])
def test_ctrl_c_prints_one_line_exits_130_and_leaves_no_folder(moment: str, tmp_path: Path) -> None:
    """From the moment byzmtl's code runs. (Python's own start-up, before ``python -m byzmtl``
    reaches byzmtl, cannot be covered: a Ctrl-C there is the interpreter's, and how long that
    lasts depends on the machine's load, so no fixed delay can aim after it.)"""
    out = tmp_path / "run"
    args = [*SHORT[:2], "--iterations", "200000", "--rules", "loss", "--out", str(out)]

    def when(process: subprocess.Popen) -> None:
        if moment == "imports":
            time.sleep(0.6)  # torch is being imported
        else:  # the folder is claimed (its lock beside it) before the computation starts
            _wait_for(lambda: any(tmp_path.glob(".run.byzmtl-lock")), process)
            time.sleep(0.3)

    done = _interrupt(args, when, tmp_path)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines() == ["byzmtl: interrupted; nothing was written"]
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if "staging" in p.name] == []


def test_progress_bars_only_on_a_terminal(tmp_path: Path) -> None:
    args = ["run", "target-localization", "--iterations", "30000", "--rules", "loss", "--quiet"]
    logged = byzmtl(*args, "--out", str(tmp_path / "log"))
    assert logged.returncode == 0, logged.stderr
    assert logged.stderr == ""  # a log file gets no bars
    main, child = pty.openpty()  # the same run with stderr on a terminal shows its bar
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 x 100
    try:
        process = subprocess.Popen(
            [*BYZMTL, *args, "--out", str(tmp_path / "tty")],
            stdout=subprocess.DEVNULL,
            stderr=child,
        )
        os.close(child)
        seen = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            seen += chunk
        assert process.wait(timeout=120) == 0
    finally:
        os.close(main)
    assert b"round" in seen and b"\r" in seen


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["bogus"],
        ["run", "--seed", "x"],
        ["run", "--byzantine", "a,b"],
        ["matrix", "target-localization"],
        ["run", "target-localization", "--no-such-flag"],
    ],
)
def test_argparse_errors_are_one_line_with_status_2(args: list[str]) -> None:
    done = byzmtl(*args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], done.stderr
    assert done.stdout == ""


def test_attack_none_is_the_run_without_attackers(tmp_path: Path) -> None:
    none = byzmtl(*SHORT, "--attack", "none", "--out", str(tmp_path / "none"))
    zero = byzmtl(*SHORT, "--attackers", "0", "--out", str(tmp_path / "zero"))
    assert none.returncode == 0 and zero.returncode == 0, none.stderr + zero.stderr
    for name in ("metrics.csv", "diagnostics.csv", "config.toml"):
        assert (tmp_path / "none" / name).read_bytes() == (tmp_path / "zero" / name).read_bytes()
    summary = json.loads((tmp_path / "none" / "summary.json").read_text())
    assert summary["byzantine"] == []
    config = Path(__file__).resolve().parents[1] / "configs" / "target-localization.toml"
    from_file = byzmtl(
        *SHORT, "--config", str(config), "--attack", "none", "--out", str(tmp_path / "file")
    )
    assert from_file.returncode == 0, from_file.stderr  # the file's 20 attackers give way
    assert json.loads((tmp_path / "file" / "summary.json").read_text())["byzantine"] == []


def test_attack_none_with_attackers_is_a_one_line_error(tmp_path: Path) -> None:
    done = byzmtl(*SHORT, "--attack", "none", "--attackers", "3", "--out", str(tmp_path / "x"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "byzmtl: error: attack: 'none' means no Byzantine agents, but attackers asks for some"
    ]
    assert not (tmp_path / "x").exists()


def _quick_result():
    from byzmtl.experiment import run

    return run({"case": "target-localization", "attackers": 3, "task": {"iterations": 20}})


def test_figures_from_the_figure_process_are_those_drawn_here(tmp_path: Path) -> None:
    from byzmtl.destination import claim
    from byzmtl.figure_process import WORKER, FigureProcess
    from byzmtl.results import RUN, write_into, write_results

    result = _quick_result()
    with (
        FigureProcess.start(WORKER) as figures,
        claim(tmp_path / "child", False, RUN) as destination,
    ):
        write_into(result, destination, figures)
    write_results(result, tmp_path / "here")
    names = sorted(p.name for p in (tmp_path / "here").iterdir())
    assert sorted(p.name for p in (tmp_path / "child").iterdir()) == names
    assert {"figure.png", "diagnostics.png", "network.png", "network.npz"} <= set(names)
    for name in ("metrics.csv", "diagnostics.csv", "summary.json"):
        assert (tmp_path / "child" / name).read_bytes() == (tmp_path / "here" / name).read_bytes()
    import numpy as np

    with (
        np.load(tmp_path / "child" / "network.npz") as a,
        np.load(tmp_path / "here" / "network.npz") as b,
    ):
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)


@pytest.mark.parametrize("title_right", [True, False])
def test_a_network_drawn_early_is_the_one_drawn_here(tmp_path: Path, title_right: bool) -> None:
    """The network figure drawn while the run computes (and the figures drawn by the worker and
    its fork) are byte for byte those drawn in this process; one drawn under another title
    than the folder's is drawn again."""
    from byzmtl.destination import claim
    from byzmtl.figure_process import WORKER, FigureProcess
    from byzmtl.names import run_title
    from byzmtl.outcome import identity
    from byzmtl.results import RUN, write_into, write_results

    result = _quick_result()
    experiment, case = result.experiment, result.experiment.case
    assert run_title(identity(experiment)) == run_title(result.summary)
    title = run_title(result.summary) if title_right else "another run"
    with (
        FigureProcess.start(WORKER) as figures,
        claim(tmp_path / "child", False, RUN) as destination,
    ):
        figures.draw_network(
            experiment.graph, experiment.groups, case.group_names, experiment.byzantine, title
        )
        assert figures.has_network
        write_into(result, destination, figures)
        assert not figures.has_network  # its temporary folder is gone
    write_results(result, tmp_path / "here")
    names = sorted(p.name for p in (tmp_path / "here").iterdir())
    assert sorted(p.name for p in (tmp_path / "child").iterdir()) == names
    for name in ("figure.png", "diagnostics.png", "network.png", "summary.json"):
        assert (tmp_path / "child" / name).read_bytes() == (tmp_path / "here" / name).read_bytes()


def test_a_failed_figure_process_is_one_warning_and_the_folder_is_complete(
    tmp_path: Path,
) -> None:
    from byzmtl.destination import claim
    from byzmtl.figure_process import FigureProcess
    from byzmtl.results import RUN, FigureWarning, write_into

    result = _quick_result()
    broken = [sys.executable, "-c", "import sys; sys.stdin.read(); sys.exit('boom: no figures')"]
    with (
        pytest.warns(FigureWarning) as caught,
        FigureProcess.start(broken) as figures,
        claim(tmp_path / "r", False, RUN) as out,
    ):
        write_into(result, out, figures)
    assert [str(w.message) for w in caught] == [
        "figures: the figure process failed (boom: no figures); drawing them here"
    ]
    names = {p.name for p in (tmp_path / "r").iterdir()}
    assert {"figure.png", "diagnostics.png", "network.png", "metrics.csv", "summary.json"} <= names
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["warnings"] == []


def test_ctrl_c_works_when_the_parent_ignores_it(tmp_path: Path) -> None:
    """A child inherits an ignored SIGINT (a shell's background job, a test runner): the command
    line takes Ctrl-C back."""
    out = tmp_path / "run"
    args = [*SHORT[:2], "--iterations", "200000", "--rules", "loss", "--out", str(out)]
    process = subprocess.Popen(
        [*BYZMTL, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        _wait_for(lambda: any(tmp_path.glob(".run.byzmtl-lock")), process)
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert not out.exists()


@pytest.mark.parametrize("fork", ["works", "refused"])
def test_the_worker_draws_in_two_processes_or_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fork: str
) -> None:
    """figure.png here and diagnostics.png in a fork; where the system refuses the fork, both
    here. Either way both are drawn, and the warnings are those of the figures."""
    import os

    from byzmtl.plots import worker
    from byzmtl.results import write_results

    folder = write_results(_quick_result(), tmp_path / "run")
    for name in ("figure.png", "diagnostics.png"):
        (folder / name).unlink()
    (folder / "diagnostics.csv").write_text("broken")
    if fork == "refused":

        def no_fork() -> int:
            raise OSError(11, "Resource temporarily unavailable")

        monkeypatch.setattr(os, "fork", no_fork)
    lines = worker._in_two(folder, "minmax", ["figure"], ["diagnostics"])
    assert (folder / "figure.png").is_file()
    assert not (folder / "diagnostics.png").exists()
    assert [line.split(" (")[0] for line in lines] == ["diagnostics: not drawn"]
