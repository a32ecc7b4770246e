"""Bad input to ``byzmtl run``: one line on stderr naming the field, exit status 2, nothing
written (no results folder, no parents made for it, no partial files).

Each row of ``BAD`` is one way in which a user can get a run wrong, with the field its message
must name. Every row runs in-process (``cli.main``); a representative few also run as a real
``byzmtl`` process, where a traceback, a MemoryError or a run that never ends would show.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from byzmtl import plugins, resources
from byzmtl.attacks import ATTACKS
from byzmtl.cli import main
from byzmtl.graph import complete, ring
from byzmtl.rules import RULES
from byzmtl.tasks import CASES

SHORT = ["--iterations", "30", "--no-progress", "--quiet"]
CASE = "target-localization"
HAR = Path(__file__).resolve().parent / "data" / "har-recreated" / "UCI HAR Dataset"
MNIST_FILES = [
    f"{split}-{kind}-idx{rank}-ubyte"
    for split in ("train", "t10k")
    for kind, rank in (("images", 3), ("labels", 1))
]

ATTACK_PLUGIN = """
from dataclasses import dataclass

import torch

from byzmtl.attacks import ATTACKS, Attack


@ATTACKS.register("{name}")
@dataclass
class Wrong(Attack):
    trains: bool = True

    def messages(self, x):
        return {returned}
"""

NOT_AN_ATTACK = """
from dataclasses import dataclass

from byzmtl.attacks import ATTACKS


@ATTACKS.register("{name}")
@dataclass
class Wrong:  # no base class: no messages(), no trains
    pass
"""


@dataclass(frozen=True)
class Bad:
    """One bad input: the arguments after ``byzmtl run`` (``{tmp}`` is the test's folder, where
    ``files`` are written first), the field the message names, and more it must say."""

    args: tuple[str, ...]
    field: str
    says: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    case: str = CASE


def plugin(name: str, returned: str) -> dict[str, bytes]:
    source = ATTACK_PLUGIN.format(name=name, returned=returned)
    return {f"{name.replace('-', '_')}.py": source.encode()}


BAD: dict[str, Bad] = {
    "attack-param-not-a-number": Bad(
        ("--attack-param", "value=abc"), "attack_params", "value='abc'"
    ),
    "attack-param-a-bool-for-a-number": Bad(
        ("--attack-param", "value=true"), "attack_params", "value=True"
    ),
    "attack-param-a-quoted-number": Bad(
        ("--attack-param", 'value="15"'), "attack_params", "value='15'"
    ),
    "rule-param-a-float-for-an-integer": Bad(
        ("--rules", "krum", "--set", "rule_params.krum.f=1.0"), "rule_params.krum", "f=1.0"
    ),
    "agents-beyond-memory": Bad(("--agents", "100000000000"), "task.agents", "GiB of memory"),
    "agents-on-a-complete-graph": Bad(
        ("--agents", "1000000", "--graph", "complete"), "task.agents", "GiB of memory"
    ),
    "iterations-beyond-a-week": Bad(("--iterations", "10000000000000"), "task.iterations", "years"),
    "r0-overflows-float32": Bad(("--r0", "1e39", "--dtype", "float32"), "r0", "float32"),
    "task-setting-overflows-float32": Bad(
        ("--set", "task.target_jitter=1e39", "--dtype", "float32"), "task.target_jitter"
    ),
    "value-then-table": Bad(("--set", "task=1", "--set", "task.mu=0.2"), "task"),
    "table-then-value": Bad(("--set", "task.mu=0.2", "--set", "task=1"), "task"),
    "flag-table-then-set-value": Bad(("--agents", "50", "--set", "task=1"), "task"),
    "infinite-area": Bad(("--set", "task.area=inf"), "task.area", "finite"),
    "nan-target": Bad(("--set", "task.targets=[[nan, 1.0]]"), "task.targets"),
    "huge-target": Bad(("--set", "task.targets=[[1e300, 1.0]]"), "task.targets", "1e+100"),
    "out-under-a-file": Bad(("--out", "{tmp}/file/sub"), "out", "not a folder", {"file": b"x"}),
    "out-is-the-current-folder": Bad(("--out", ".", "--overwrite"), "out", "current folder"),
    "plugin-syntax-error": Bad(
        ("--plugin", "{tmp}/broken.py"),
        "plugin",
        "broken.py, line 2: SyntaxError: ",
        {"broken.py": b"x = 1\ndef f(:\n"},
    ),
    "plugin-raises": Bad(
        ("--plugin", "{tmp}/raising.py"),
        "plugin",
        "raising.py, line 3: RuntimeError: boom",
        {"raising.py": b"import math\n\nraise RuntimeError('boom')\n"},
    ),
    "plugin-missing": Bad(("--plugin", "{tmp}/absent.py"), "plugin", "no such file"),
    "config-not-utf8": Bad(
        ("--config", "{tmp}/c.toml"), "config", "not UTF-8", {"c.toml": b"seed = 1 # \xff\n"}
    ),
    "edge-list-not-utf8": Bad(
        ("--graph", "edgelist", "--set", "graph.path={tmp}/e.txt"),
        "graph",
        "cannot read edge list",
        {"e.txt": b"0 1\n\xff\xfe 2\n"},
    ),
    "graphml-not-xml": Bad(
        ("--graph", "graphml", "--set", "graph.path={tmp}/g.graphml"),
        "graph",
        "cannot read GraphML",
        {"g.graphml": b"\xff\xfe<graphml>"},
    ),
    "groups-file-not-utf8": Bad(
        ("--set", "task.groups={tmp}/g.txt"), "task.groups", "not UTF-8", {"g.txt": b"\xff\xfe\n"}
    ),
    "negative-scale": Bad(
        ("--attack", "scaled", "--attack-param", "scale=-1"), "attack_params", "scale=-1"
    ),
    "fractional-krum-f": Bad(
        ("--rules", "krum", "--set", "rule_params.krum.f=1.5"), "rule_params.krum", "f=1.5"
    ),
    "unknown-rule-in-rule-params": Bad(("--set", "rule_params.bogus.x=1"), "rule_params.bogus"),
    "unknown-rule-parameter": Bad(
        ("--rules", "loss", "--set", "rule_params.loss.bogus=1"), "rule_params.loss", "bogus"
    ),
    "byzantine-and-attackers-disagree": Bad(
        ("--byzantine", "1,2", "--attackers", "3"), "byzantine", "attackers = 3"
    ),
    "byzantine-and-no-attackers": Bad(
        ("--byzantine", "1,2", "--attackers", "0"), "byzantine", "attackers = 0"
    ),
    "epochs-on-target-localization": Bad(("--epochs", "3"), "task.epochs", "--iterations"),
    "iterations-on-har": Bad(
        ("--data-dir", str(HAR), "--iterations", "3"), "task.iterations", "--epochs", case="har"
    ),
    "seed-a-bool": Bad(("--set", "seed=true"), "seed", "True is not an integer"),
    "switch-a-number": Bad(("--set", "deterministic=1"), "deterministic", "not true or false"),
    "agents-a-float": Bad(("--set", "task.agents=20.0"), "task.agents", "20.0 is not an integer"),
    "har-without-its-data": Bad(
        ("--data-dir", "{tmp}/nowhere", "--epochs", "1"), "task.data_dir", "UCI HAR", case="har"
    ),
    "digits-with-a-broken-mnist-file": Bad(
        ("--data-dir", "{tmp}", "--epochs", "1"),
        "task.data_dir",
        "-idx",
        dict.fromkeys(MNIST_FILES, b"not an IDX file"),
        case="digits",
    ),
    "attack-of-the-wrong-shape": Bad(
        ("--plugin", "{tmp}/short_attack.py", "--attack", "short-attack", "--attackers", "5"),
        "attack",
        "(R, B, d) = (4, ",
        plugin("short-attack", "x.psi[:, :2]"),
    ),
    "attack-of-a-wider-dtype": Bad(
        (
            "--plugin",
            "{tmp}/wide_attack.py",
            "--attack",
            "wide-attack",
            "--attackers",
            "5",
            "--dtype",
            "float32",
        ),
        "attack",
        "dtype torch.float32",
        plugin("wide-attack", "x.psi.index_select(1, x.senders).double()"),
    ),
    "attack-returning-a-list": Bad(
        ("--plugin", "{tmp}/list_attack.py", "--attack", "list-attack", "--attackers", "5"),
        "attack",
        "got list",
        plugin("list-attack", "[0.0]"),
    ),
    "attack-without-hooks": Bad(
        ("--plugin", "{tmp}/bare_attack.py", "--attack", "bare-attack", "--attackers", "5"),
        "attack",
        "no check() method",
        {"bare_attack.py": NOT_AN_ATTACK.format(name="bare-attack").encode()},
    ),
}
# a real process for a few: memory, time, a plugin, the destination
IN_A_PROCESS = [
    "agents-beyond-memory",
    "iterations-beyond-a-week",
    "plugin-syntax-error",
    "out-under-a-file",
    "attack-of-the-wrong-shape",
]


def arguments(bad: Bad, folder: Path) -> list[str]:
    """``byzmtl run`` arguments of ``bad`` in ``folder`` (its files written there), with
    ``--out folder/out/run`` unless it names its own."""
    for name, content in bad.files.items():
        (folder / name).write_bytes(content)
    args = [arg.replace("{tmp}", str(folder)) for arg in bad.args]
    if "--out" not in args:
        args += ["--out", str(folder / "out" / "run")]
    if bad.case in ("har", "digits"):  # learning cases: epochs, not iterations
        return ["run", bad.case, *args, "--no-progress", "--quiet"]
    iterations = [] if "--iterations" in args else SHORT[:2]
    return ["run", bad.case, *args, *iterations, *SHORT[2:]]


def assert_refused(err: str, bad: Bad, folder: Path) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"byzmtl: error: {bad.field}"), lines[0]
    assert bad.says in lines[0], lines[0]
    left = sorted(p.name for p in folder.iterdir())
    assert left == sorted(bad.files), f"written: {left}"


@pytest.fixture
def isolated_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names a plugin registers during the test are gone after it."""
    for registry in (RULES, ATTACKS, CASES):
        monkeypatch.setattr(registry, "_classes", dict(registry._classes))


@pytest.mark.usefixtures("isolated_registries")
@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_one_line_naming_the_field_and_writes_nothing(
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = BAD[name]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(resources.BYPASS, raising=False)
    monkeypatch.setattr(sys, "modules", dict(sys.modules))  # plugins imported here go with it
    code = main(arguments(bad, tmp_path))
    assert code == 2
    assert_refused(capsys.readouterr().err, bad, tmp_path)


@pytest.mark.parametrize("name", IN_A_PROCESS)
def test_bad_input_in_a_process(name: str, tmp_path: Path) -> None:
    bad = BAD[name]
    environment = {k: v for k, v in os.environ.items() if k != resources.BYPASS}
    done = subprocess.run(
        [sys.executable, "-m", "byzmtl", *arguments(bad, tmp_path)],
        cwd=tmp_path, env={**environment, "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert_refused(done.stderr, bad, tmp_path)


def test_the_bypass_lets_an_oversized_plan_through(monkeypatch: pytest.MonkeyPatch) -> None:
    """BYZMTL_NO_RESOURCE_CHECK=1 skips the checks: a run refused as too long is built."""
    from byzmtl.experiment import prepare

    config = {"case": CASE, "rules": ["none"], "task": {"agents": 10, "iterations": 10**13}}
    monkeypatch.delenv(resources.BYPASS, raising=False)
    with pytest.raises(resources.ResourceError, match=r"^task\.iterations: .* years"):
        prepare(config)
    monkeypatch.setenv(resources.BYPASS, "1")
    assert prepare(config).case.n_rounds == 10**13


def test_the_written_attack_parameters_are_the_coerced_ones(tmp_path: Path) -> None:
    """A parameter given as a type its hint converts exactly (an integer for a float) is
    recorded as the value that ran (config.toml then reruns the same run)."""
    from byzmtl.experiment import prepare

    config = {
        "case": CASE,
        "rules": ["krum", "loss"],
        "rule_params": {"krum": {"f": 2}},
        "attack": "scaled",
        "attack_params": {"scale": 1},
    }
    experiment = prepare(config)
    assert experiment.config.rule_params == {"krum": {"f": 2}}
    assert experiment.config.attack_params == {"scale": 1.0}
    assert isinstance(experiment.config.attack_params["scale"], float)


def test_consistent_byzantine_ids_and_count_are_accepted() -> None:
    from byzmtl.config import parse

    config = parse({"case": CASE, "byzantine": [3, 1, 3], "attackers": 2}).resolved()
    assert config.byzantine == [3, 1, 3] and config.attackers == 2
    assert parse({"case": CASE, "byzantine": [4]}).resolved().attackers == 1  # written back


@pytest.mark.parametrize("n", [1, 2, 5, 6, 9, 10])
def test_a_ring_with_hops_past_half_the_ring_is_the_complete_graph(n: int) -> None:
    whole = complete(n)
    for hops in range(max(1, n // 2), n + 3):
        built = ring(n, hops)
        assert np.array_equal(built.receivers, whole.receivers), hops
        assert np.array_equal(built.senders, whole.senders), hops
    if n >= 5:
        assert ring(n, 2).n_edges == 5 * n  # short of half the ring: 2 hops either side


# -- resources -----------------------------------------------------------------------------------


def size(**changes: int | str) -> resources.Size:
    base = {"agents": 100, "edges": 1000, "parameters": 2, "replicas": 4, "rounds": 500}
    return resources.Size(**{**base, "records": 500, **changes})  # type: ignore[arg-type]


FIELDS = {"agents": "task.agents", "rounds": "task.iterations"}


def test_the_paper_run_fits_and_takes_a_fraction_of_a_second() -> None:
    parts = resources.bytes_needed(size())
    assert 1e4 < sum(parts.values()) < 1e7
    assert resources.seconds_needed(size()) == pytest.approx(500 * (20e-6 + 1e-10 * 4 * 1200))
    resources.check(size(), FIELDS, lambda: 2.0**30, {})


def test_memory_grows_with_the_network_and_blames_its_setting() -> None:
    gib = 2.0**30
    with pytest.raises(resources.ResourceError) as caught:
        resources.check(size(agents=10**11, edges=10**12), FIELDS, lambda: 21 * gib, {})
    message = str(caught.value)
    assert message.startswith("task.agents: this run needs about ")
    assert message.endswith("GiB of memory, this machine has 21 GiB available "
                            f"({resources.BYPASS}=1 runs it anyway)")  # fmt: skip
    needed = float(message.split("about ")[1].split(" GiB")[0])
    parts = resources.bytes_needed(size(agents=10**11, edges=10**12))
    assert needed == pytest.approx(sum(parts.values()) / gib, rel=0.05)


def test_memory_of_many_records_blames_the_rounds() -> None:
    huge = size(rounds=10**10, records=10**10)
    with pytest.raises(resources.ResourceError, match=r"^task\.iterations: .*GiB of memory"):
        resources.check(huge, {**FIELDS}, lambda: 2.0**30, {"OTHER": "1"})


def test_time_beyond_a_week_is_refused_and_the_bypass_skips_both() -> None:
    long = size(rounds=10**13, records=10**13)
    with pytest.raises(resources.ResourceError) as caught:
        resources.check(long, FIELDS, lambda: math.inf, {})
    assert str(caught.value).startswith("task.iterations: this run would take at least 6.4")
    assert "years" in str(caught.value)
    resources.check(long, FIELDS, lambda: 1.0, {resources.BYPASS: "1"})
    week = resources.MAX_SECONDS / resources.seconds_needed(size(rounds=1, records=1))
    resources.check(size(rounds=int(week * 0.99)), FIELDS, lambda: None, {})
    with pytest.raises(resources.ResourceError):
        resources.check(size(rounds=int(week * 1.01)), FIELDS, lambda: None, {})


def test_unknown_memory_is_not_checked() -> None:
    resources.check(size(agents=10**11, edges=10**12), FIELDS, lambda: None, {})


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(5e8, "15.8 years"), (86400 * 3.5, "3.50 days"), (7200, "2.00 hours"), (12.5, "12.5 seconds")],
)
def test_durations_read_in_their_largest_unit(seconds: float, shown: str) -> None:
    assert resources.duration(seconds) == shown


def fake_system(
    root: Path, available_kib: int, cgroup: str, files: dict[str, str]
) -> Callable[[], float | None]:
    (root / "proc" / "self").mkdir(parents=True)
    (root / "proc" / "meminfo").write_text(
        f"MemTotal:       99999999 kB\nMemAvailable:   {available_kib} kB\n"
    )
    (root / "proc" / "self" / "cgroup").write_text(cgroup)
    for name, text in files.items():
        path = root / "sys" / "fs" / "cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return lambda: resources.available_bytes(root)


def test_available_memory_is_meminfo_without_a_cgroup_limit(tmp_path: Path) -> None:
    read = fake_system(tmp_path, 2048, "0::/job\n", {"job/memory.max": "max\n"})
    assert read() == 2048 * 1024


def test_a_cgroup_v2_limit_caps_the_available_memory(tmp_path: Path) -> None:
    files = {
        "memory.max": "max\n",  # the root has none
        "job/memory.max": "1000000\n",
        "job/memory.current": "400000\n",
        "job/task/memory.max": "max\n",
        "job/task/memory.current": "100\n",
    }
    read = fake_system(tmp_path, 10**9, "0::/job/task\n", files)
    assert read() == 600000  # the parent's limit applies to its children


def test_a_cgroup_v1_limit_caps_the_available_memory(tmp_path: Path) -> None:
    files = {
        "memory/job/memory.limit_in_bytes": "5000\n",
        "memory/job/memory.usage_in_bytes": "1000\n",
    }
    read = fake_system(tmp_path, 10**9, "4:memory:/job\n3:cpu,cpuacct:/job\n", files)
    assert read() == 4000


def test_nothing_readable_means_unknown(tmp_path: Path) -> None:
    assert resources.available_bytes(tmp_path) is None


def test_planned_edges_of_every_graph_kind() -> None:
    from byzmtl.config import GraphSettings

    def edges(kind: str, **settings: object) -> int:
        return resources.planned_edges(GraphSettings(kind=kind, **settings), 100)  # type: ignore[arg-type]

    assert edges("complete") == 100 * 100
    assert edges("ring", hops=2) == 500 and edges("ring", hops=80) == 100 * 100
    assert edges("k-regular", k=4) == 500
    assert edges("erdos-renyi", p=0.5) == 100 + 2475 * 2
    assert edges("geometric", max_neighbours=10) == 1000
    assert edges("edgelist", path="x") == 100  # a lower bound: read from the file


# -- plugins ------------------------------------------------------------------------------------


@pytest.fixture
def clean_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "modules", dict(sys.modules))


@pytest.mark.usefixtures("clean_modules")
@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"x = 1\n\ndef f(:\n    pass\n", r", line 3: SyntaxError: "),
        (b"def f():\nreturn 1\n", r", line 2: IndentationError: expected an indented block"),
        (b"x = 1\ny = 2\nraise ValueError('no\\nway')\n", r", line 3: ValueError: no way$"),
        (b"import no_such_module_anywhere\n", r", line 1: ModuleNotFoundError: No module named"),
        (b"def f():\n    return 1 / 0\n\nf()\n", r", line 2: ZeroDivisionError: division by zero"),
        (b"x = '\xff'\n", r", line 1: SyntaxError: "),
        (b"raise RuntimeError()\n", r", line 1: RuntimeError: \(no message\)$"),
    ],
)
def test_a_plugin_that_cannot_be_imported_is_one_line_with_its_line(
    tmp_path: Path, source: bytes, message: str
) -> None:
    path = tmp_path / "mine.py"
    path.write_bytes(source)
    with pytest.raises(plugins.PluginError, match=rf"^plugin: {path}{message}") as caught:
        plugins.load([path])
    assert "\n" not in str(caught.value)
    assert f"{plugins.PREFIX}mine" not in sys.modules


@pytest.mark.usefixtures("clean_modules")
def test_a_plugin_that_imports_is_a_module_and_registers(tmp_path: Path) -> None:
    path = tmp_path / "fine.py"
    path.write_text("VALUE = 3\n")
    (module,) = plugins.load([path])
    assert module.VALUE == 3 and sys.modules[f"{plugins.PREFIX}fine"] is module


def test_a_missing_plugin_or_a_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(plugins.PluginError, match=r"^plugin: .*absent\.py: no such file$"):
        plugins.load([tmp_path / "absent.py"])
    with pytest.raises(plugins.PluginError, match=r"is a folder"):
        plugins.load([tmp_path])


def test_a_plugin_error_is_a_config_error() -> None:
    from byzmtl.config import ConfigError

    assert issubclass(plugins.PluginError, ConfigError)


# -- inputs that are not errors, and what nothing written means -----------------------------------


@pytest.mark.parametrize("directed", [False, True])
def test_an_empty_edge_list_runs_every_agent_alone(tmp_path: Path, directed: bool) -> None:
    """No edges: every agent hears only itself, so every rule is learning alone (none)."""
    import json

    (tmp_path / "e.txt").write_text("# no edges\n")
    out = tmp_path / "run"
    args = ["--graph", "edgelist", "--set", f"graph.path={tmp_path / 'e.txt'}"]
    args += ["--set", f"graph.directed={str(directed).lower()}", "--attackers", "5"]
    assert main(["run", CASE, *args, "--out", str(out), *SHORT]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["edges"] == summary["agents"] == 100
    finals = {rule: entry["final"]["msd"] for rule, entry in summary["rules"].items()}
    assert all(final == finals["none"] for final in finals.values())


def test_a_results_folder_takes_the_umask(tmp_path: Path) -> None:
    out = tmp_path / "made" / "run"
    previous = os.umask(0o027)
    try:
        assert main(["run", CASE, "--rules", "none", "--out", str(out), *SHORT]) == 0
    finally:
        os.umask(previous)
    assert (out.parent.stat().st_mode & 0o777, out.stat().st_mode & 0o777) == (0o750, 0o750)
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o640}


def test_a_claim_given_up_removes_the_folders_it_made(tmp_path: Path) -> None:
    from byzmtl.destination import claim
    from byzmtl.results import RUN

    (tmp_path / "kept").mkdir()
    with claim(tmp_path / "kept" / "a" / "b" / "run", False, RUN):
        assert (tmp_path / "kept" / "a" / "b").is_dir()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["kept"]
    with claim(tmp_path / "kept" / "a" / "run", False, RUN):
        (tmp_path / "kept" / "a" / "other").write_text("someone else's")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "kept", "other"]


def test_an_accelerator_s_free_memory_is_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 * 2**30, 8 * 2**30))
    assert resources.device_bytes("cuda:0") == 3 * 2**30
    assert resources.device_bytes("meta") is None
    with pytest.raises(resources.ResourceError, match=r"cuda:0 has 3 GiB available"):
        resources.check(size(agents=10**9, edges=10**10, device="cuda:0"), FIELDS)


@pytest.mark.usefixtures("isolated_registries", "clean_modules")
def test_a_failed_run_into_the_default_folder_leaves_no_runs_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = BAD["attack-of-the-wrong-shape"]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in bad.args]
    for name, content in bad.files.items():
        (tmp_path / name).write_bytes(content)
    assert main(["run", CASE, *args, *SHORT]) == 2
    assert "(R, B, d)" in capsys.readouterr().err
    assert list(work.iterdir()) == []


# -- merging settings: a law ---------------------------------------------------------------------

TABLES = st.recursive(
    st.integers(0, 3),
    lambda inner: st.dictionaries(st.sampled_from("abc"), inner, max_size=3),
    max_leaves=8,
)


def flat(table: dict, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    """Every setting of nested tables by its path; a table itself is the value ``dict``."""
    out: dict[tuple[str, ...], object] = {}
    for key, value in table.items():
        path = (*prefix, key)
        if isinstance(value, dict):
            out[path] = dict
            out.update(flat(value, path))
        else:
            out[path] = value
    return out


@given(base=st.dictionaries(st.sampled_from("abc"), TABLES, max_size=3), over=TABLES)
def test_merging_overrides_settings_and_never_a_table_by_a_value(base: dict, over: object) -> None:
    """merge(base, over) has every setting of ``over`` and the others of ``base``; where one
    side has a table and the other a value at the same place, it is an error naming that
    place (the first, in the order of ``over``)."""
    from byzmtl.config import ConfigError, merge

    overrides = over if isinstance(over, dict) else {"a": over}
    old, new = flat(base), flat(overrides)
    clashes = [p for p in new if p in old and (old[p] is dict) != (new[p] is dict)]
    if clashes:
        with pytest.raises(ConfigError, match=rf"^{'.'.join(clashes[0])}: given both as a table"):
            merge(base, overrides)
        return
    merged = flat(merge(base, overrides))
    expected = {**old, **new}
    assert merged == expected
