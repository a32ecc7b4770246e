"""Every command that README.md and the configs document runs, so that none of them can rot.

Commands are collected from README.md's code blocks (lines starting with ``byzmtl `` or
``bash scripts/``, after an optional ``$ `` prompt, backslash continuations joined) and from the
``# Run it with:`` line of every ``configs/*.toml``. Each one runs as written, except that the
rules below shorten it, by subcommand and by the case study's settings (never per line), so that
a new command is covered without editing this file:

- ``--out`` goes to a temporary folder; ``--data-dir`` (added where the case study reads data) to
  the in-repository sample of its dataset (``tests/data``); paths of the repository become
  absolute, and the command runs in a temporary working folder;
- ``run`` and ``matrix``: 20 iterations or 1 epoch, 32 training and 16 test images per agent
  where the case study has such settings; ``matrix``: the first of its seeds, and of its attacks
  (with ``all``: the case study's default attack) plus those its ``--attack-param`` names;
- ``bench``: the scaling benchmark at 100 agents;
- ``run --checkpoint-every K``: a checkpoint every 5 iterations or 1 epoch; ``run --resume DIR``:
  the documented command that writes DIR runs first, shortened, and is interrupted (Ctrl-C)
  after its first checkpoint, then the resume continues it.

Commands run in-process through ``byzmtl.cli.main``. A command's ``--plugin`` files are imported
first, by the command line's own ``load_plugins`` (the case study a plugin registers decides how
to shorten the command), into registries that are restored after the test. A command that no
rule covers fails its test with a message saying so.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from byzmtl.attacks import ATTACKS
from byzmtl.checkpoints import CheckpointFolder
from byzmtl.cli import build_parser, load_plugins, main
from byzmtl.config import read_toml
from byzmtl.rules import RULES
from byzmtl.tasks import CASES

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "data"
SETUP_COMMANDS = {"bash scripts/demo.sh", "bash scripts/test.sh"}  # CI runs these itself
DATA_SAMPLES = {  # case study -> its --data-dir sample
    "har": SAMPLES / "har-recreated" / "UCI HAR Dataset",
    "digits": SAMPLES / "mnist",
}
# task settings (by name, whichever case study has them) -> the value of a shortened run
SHORTER_TASK = {
    "iterations": 20,
    "epochs": 1,
    "train_per_agent": 32,
    "test_per_agent": 16,
}
RESULT_FILES = {"run": "summary.json", "matrix": "matrix.csv"}
REPOSITORY_PATH = re.compile(
    r"(?<![\w./-])((?:\.ci|benchmarks|configs|docs|examples|scripts|src|tests)/[\w./-]*[\w/])"
)


def code_lines(markdown: str) -> Iterator[str]:
    """The lines of a Markdown text's code blocks (fenced or indented by four spaces)."""
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced or line.startswith("    "):
            yield line.strip()


def commands_in(lines: Iterator[str]) -> Iterator[str]:
    """``byzmtl ...`` and ``bash scripts/...`` commands, continuation lines joined."""
    pending = ""
    for raw in lines:
        line = raw.removeprefix("$ ") if not pending else raw
        if pending or line.startswith(("byzmtl ", "bash scripts/")):
            pending = f"{pending} {line.removesuffix(chr(92)).strip()}".strip()
            if not line.endswith("\\"):
                yield pending
                pending = ""


def documented_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    found = list(commands_in(code_lines(readme)))
    for config in sorted((ROOT / "configs").glob("*.toml")):
        for line in config.read_text().splitlines():
            if line.startswith("# Run it with:"):
                found.append(line.removeprefix("# Run it with:").strip())
    return list(dict.fromkeys(found))


COMMANDS = documented_commands()


def _case_of(argv: list[str]) -> str | None:
    args = build_parser().parse_args(argv)
    if args.case is not None:
        return args.case
    if args.config is not None:
        return read_toml(args.config).get("case")
    return None


def _absolute(argv: list[str]) -> list[str]:
    """Arguments naming a file or folder of the repository, made absolute."""
    return [str(ROOT / item) if item and (ROOT / item).exists() else item for item in argv]


def _replace(argv: list[str], flag: str, value: str) -> list[str]:
    """``argv`` with the value of ``flag`` replaced by ``value`` (added if absent)."""
    if flag in argv:
        at = argv.index(flag)
        return [*argv[: at + 1], value, *argv[at + 2 :]]
    return [*argv, flag, value]


def shortened(argv: list[str], out: Path) -> list[str]:
    """The command ``argv`` as the test runs it (see the module docstring)."""
    command = argv[0]
    if command == "list":
        return argv
    if command == "bench":
        return [*argv, "--only", "scaling", "--agents", "100", "--rounds", "3"]
    if command not in RESULT_FILES:
        raise AssertionError(f"no rule shortens `byzmtl {command}`: add one to {__file__}")
    if "--resume" in argv:
        return [*_replace(argv, "--resume", str(out)), "--no-progress"]
    argv = _replace(_absolute(argv), "--out", str(out))
    case = _case_of(argv)
    if case is None or case not in CASES.names():
        raise AssertionError(f"`byzmtl {shlex.join(argv)}` names no known case study")
    fields = CASES.get(case).settings_model.model_fields
    if "data_dir" in fields:
        if case not in DATA_SAMPLES:
            raise AssertionError(f"no in-repository data sample for case study {case!r}")
        argv = _replace(argv, "--data-dir", str(DATA_SAMPLES[case]))
    for name, value in SHORTER_TASK.items():
        if name in fields:
            argv += ["--set", f"task.{name}={value}"]
    if "--checkpoint-every" in argv:
        every = "1" if "epochs" in fields else "5"
        argv = _replace(argv, "--checkpoint-every", every)
    if command == "matrix":
        args = build_parser().parse_args(argv)
        first = CASES.get(case).defaults.attack if args.attacks == ["all"] else args.attacks[0]
        named = [item.partition(".")[0] for item in args.attack_param]
        argv = _replace(argv, "--attacks", ",".join(dict.fromkeys([first, *named])))
        argv = _replace(argv, "--seeds", str(args.seeds[0]))
    return [*argv, "--no-progress"]


def without_plugins(argv: list[str]) -> list[str]:
    """``argv`` without its ``--plugin FILE`` pairs (once they are imported)."""
    out: list[str] = []
    items = iter(argv)
    for item in items:
        if item == "--plugin":
            next(items)
        else:
            out.append(item)
    return out


@pytest.fixture
def isolated_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names a plugin registers during the test are gone after it (the registries offer no
    way to remove a name, so their tables are swapped for copies)."""
    for registry in (RULES, ATTACKS, CASES):
        monkeypatch.setattr(registry, "_classes", dict(registry._classes))


def test_commands_are_read_from_code_blocks_only() -> None:
    text = (
        "Prose: byzmtl run x is not a command.\n\n"
        "    byzmtl run a --rules loss \\\n"
        "        --seed 1   # a comment\n"
        "    $ byzmtl list\n"
        "    python examples/api.py\n"
        "```python\nbyzmtl.run({})\nbash scripts/x.sh\n```\n"
    )
    assert list(commands_in(code_lines(text))) == [
        "byzmtl run a --rules loss --seed 1   # a comment",
        "byzmtl list",
        "bash scripts/x.sh",
    ]


def test_shortening_is_by_case_study_and_subcommand(tmp_path: Path) -> None:
    argv = ["matrix", "har", "--data-dir", "PATH", "--epochs", "3", "--seeds", "4,5"]
    argv += ["--attack-param", "adaptive.steps=12", "--attackers", "10"]
    short = shortened(argv, tmp_path / "m")
    default = CASES.get("har").defaults.attack
    assert build_parser().parse_args(short).attacks == [default, "adaptive"]
    assert short[short.index("--data-dir") + 1] == str(DATA_SAMPLES["har"])
    assert short[short.index("--seeds") + 1] == "4" and short[short.index("--out") + 1] == str(
        tmp_path / "m"
    )
    assert "task.epochs=1" in short and "task.iterations=20" not in short
    config = shortened(["run", "--config", "configs/target-localization.toml"], tmp_path)
    assert config[2] == str(ROOT / "configs" / "target-localization.toml")
    assert "task.iterations=20" in config and "--data-dir" not in config
    with pytest.raises(AssertionError, match="no rule shortens `byzmtl frobnicate`"):
        shortened(["frobnicate"], tmp_path)
    with pytest.raises(AssertionError, match="names no known case study"):
        shortened(["run", "no-such-case"], tmp_path)


def test_commands_were_found() -> None:
    subcommands = {shlex.split(c)[1] for c in COMMANDS if c.startswith("byzmtl ")}
    assert {"run", "matrix", "list", "bench"} <= subcommands
    assert any("--config configs/" in c for c in COMMANDS)  # the configs' "Run it with:"
    joined = [c for c in COMMANDS if "--attackers 0" in c and "runs/digits-demo-0" in c]
    assert len(joined) == 1 and "\\" not in joined[0]  # a continuation line, joined


@pytest.mark.usefixtures("isolated_registries")
@pytest.mark.parametrize("command", COMMANDS, ids=[c.split("  #")[0].strip() for c in COMMANDS])
def test_documented_command_runs(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    words = shlex.split(command, comments=True)
    if words[0] == "bash":
        assert shlex.join(words) in SETUP_COMMANDS, (
            f"`{command}`: no rule runs documented shell scripts besides {sorted(SETUP_COMMANDS)}"
        )
        assert (ROOT / words[1]).is_file()
        return
    argv = words[1:]
    out = tmp_path / "out"
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("BYZMTL_CACHE", str(tmp_path_factory.getbasetemp() / "digits-cache"))
    if "--plugin" in argv:
        load_plugins(build_parser().parse_args(_absolute(argv)).plugin)
        argv = without_plugins(argv)
    if "--resume" in argv:
        interrupt_the_writer_of(argv[argv.index("--resume") + 1], out)
    code = main(shortened(argv, out))
    assert code == 0, f"`{command}` exited {code}: {capsys.readouterr().err.strip()}"
    if argv[0] in RESULT_FILES:
        assert (out / RESULT_FILES[argv[0]]).is_file(), f"`{command}` wrote no results folder"
    else:
        assert capsys.readouterr().out.strip(), f"`{command}` printed nothing"
    assert not any(work.iterdir()), f"`{command}` wrote into its working folder"


def interrupt_the_writer_of(run_dir: str, out: Path) -> None:
    """Run the documented command that writes ``run_dir`` (shortened, into ``out``) and stop it
    as Ctrl-C does once its first checkpoint is written."""
    writers = [c for c in COMMANDS if f"--out {run_dir}" in c and "--checkpoint-every" in c]
    assert writers, f"no documented command writes {run_dir} with checkpoints"
    real = CheckpointFolder.write

    def interrupted(self: CheckpointFolder, *args: Any) -> None:
        real(self, *args)
        raise KeyboardInterrupt

    with mock.patch.object(CheckpointFolder, "write", interrupted):
        assert main(shortened(shlex.split(writers[0], comments=True)[1:], out)) == 130
    assert not (out / "summary.json").exists()


def test_readme_names_only_files_of_the_repository() -> None:
    readme = (ROOT / "README.md").read_text()
    named = set(REPOSITORY_PATH.findall(readme))
    assert "configs/target-localization.toml" in named
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert not missing, f"README.md names files that do not exist: {missing}"
