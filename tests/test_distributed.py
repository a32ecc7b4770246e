"""A run on P processes gives the one-process run's results, bit for bit (byzmtl.engine.ranks).

Every registered rule under every registered attack, on a small target-localization network cut
into five shards, is run once in this process (P = 1) and once in a group of P = 2 and of P = 3
processes (gloo on the CPU, one batch of runs per group); so are a single-shard network (P = 2:
rank 1 owns no shard and waits) and the HAR and digits samples (P = 2). Their metrics.csv,
diagnostics.csv and summary.json (timings left out) are byte for byte those of P = 1. The
command line's ``--procs`` and a two-"node" torchrun over loopback give the same folder, and a
rank's failure stops every rank with one line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from byzmtl import distributed
from byzmtl.attacks import ATTACKS
from byzmtl.cli import main
from byzmtl.config import read_toml
from byzmtl.engine.ranks import owned_range
from byzmtl.experiment import prepare, run
from byzmtl.plots import load_network, save_network
from byzmtl.results import _write_tables
from byzmtl.rules import RULES
from tests.distributed_batch import state_tensors

HERE = Path(__file__).resolve().parent
BATCH = HERE / "distributed_batch.py"
TABLES = ("metrics.csv", "diagnostics.csv")
TIMINGS = ("wall_seconds", "compute_seconds")
AGENTS, ROUNDS = 40, 6
SHARD_EDGES_PER_RULE = 90  # about 400 edges: five shards
MIMICKED = 39  # an honest agent of the last rank (the attackers: 8, 10, 11, 15, 18, 19, 24, 36)


def _attack_config(attack: str) -> dict[str, Any]:
    rules = RULES.names()
    return {
        "case": "target-localization",
        "attack": attack,
        "attackers": 8,
        "rules": rules,
        "shard_edges": SHARD_EDGES_PER_RULE * len(rules),
        "task": {"agents": AGENTS, "iterations": ROUNDS},
    }


def _sample_configs() -> dict[str, dict[str, Any]]:
    digits = {
        "data_dir": str(HERE / "data" / "mnist"),
        "mnist_agents": 3,
        "synthetic_agents": 3,
        "train_per_agent": 32,
        "test_per_agent": 16,
        "mnist_batch": 16,
        "synthetic_batch": 32,
        "epochs": 1,
    }
    har = {"data_dir": str(HERE / "data" / "har-recreated" / "UCI HAR Dataset"), "epochs": 1}
    return {
        "one-shard": {**_attack_config("constant"), "shard_edges": None},
        # one rule: no array of a rank's can have the whole graph's number of edges by chance;
        # percentiles: every rank's values of every subset are gathered
        "one-rule": {
            **_attack_config("constant"),
            "rules": ["loss"],
            "shard_edges": 90,
            "percentiles": [10, 90],
        },
        # more normal agents (63,000) than a block of a mean's fixed-order sum (2^15), cut by
        # the ranks inside a block: the ranks' pieces of the statistics (byzmtl.split_stats)
        "many-agents": {
            "case": "target-localization",
            "attackers": 7000,
            "rules": ["loss", "none"],
            "task": {"agents": 70_000, "iterations": 2},
        },
        "complete-one-rule": {  # dense: its ranks hold the whole network (the first stage)
            **_attack_config("constant"),
            "rules": ["loss"],
            "shard_edges": 90,
            "graph": {"kind": "complete"},
        },
        # the copied agent is rank 1's, and every rank's receivers hear it
        "mimic-far": {**_attack_config("mimic"), "attack_params": {"agent": MIMICKED}},
        "har": {"case": "har", "attackers": 6, "shard_edges": 4 * 40, "task": har},
        "digits": {"case": "digits", "attackers": 2, "shard_edges": 4 * 12, "task": digits},
    }


BATCHES = {  # P -> the runs made by a group of P processes
    2: {**{a: _attack_config(a) for a in ATTACKS.names()}, **_sample_configs()},
    3: {a: _attack_config(a) for a in ATTACKS.names()},
}


def _tables(result: Any, folder: Path) -> Path:
    folder.mkdir(parents=True)
    _write_tables(result, folder)
    return folder


def _same_files(folder: Path, reference: Path) -> None:
    """Byte-identical tables; the same summary and configuration but for timings and procs."""
    for name in TABLES:
        assert (folder / name).read_bytes() == (reference / name).read_bytes(), name
    summaries = [json.loads((f / "summary.json").read_text()) for f in (folder, reference)]
    for summary in summaries:
        for key in TIMINGS:
            assert summary.pop(key) >= 0
    assert summaries[0] == summaries[1]
    configs = [read_toml(f / "config.toml") for f in (folder, reference)]
    assert configs[0].pop("procs") > 1 and configs[1].pop("procs") == 1
    assert configs[0] == configs[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """P -> a folder of every run of BATCHES[P] (P = 1: every run of every batch, here)."""
    root = tmp_path_factory.mktemp("distributed")
    with pytest.MonkeyPatch.context() as patch, ThreadPoolExecutor(len(BATCHES)) as pool:
        patch.setenv("BYZMTL_CACHE", str(root / "digits-cache"))
        patch.setenv(distributed.TIMEOUT_VARIABLE, "120")
        launched = {}
        for procs, batch in BATCHES.items():  # the groups run while this process runs P = 1
            spec = root / f"batch-{procs}.json"
            spec.write_text(json.dumps(batch))
            command = [sys.executable, str(BATCH), str(spec), str(root / f"p{procs}")]
            launched[procs] = pool.submit(distributed.spawn, command, procs)
        everything = {name: c for batch in BATCHES.values() for name, c in batch.items()}
        for name, config in everything.items():
            result = run(config)
            _tables(result, root / "p1" / name)
            torch.save(state_tensors(result.state), root / "p1" / f"{name}-state-0.pt")
        for procs, status in launched.items():
            assert status.result(timeout=300) == 0, f"the group of {procs} failed"
    return {procs: root / f"p{procs}" for procs in (1, *BATCHES)}


@pytest.mark.parametrize("procs", sorted(BATCHES))
@pytest.mark.parametrize("attack", ATTACKS.names())
def test_every_attack_gives_the_one_process_results(
    runs: dict[int, Path], attack: str, procs: int
) -> None:
    _same_files(runs[procs] / attack, runs[1] / attack)


@pytest.mark.parametrize("rule", RULES.names())
def test_every_rule_has_its_rows_and_they_match(runs: dict[int, Path], rule: str) -> None:
    for procs in BATCHES:
        for attack in ATTACKS.names():
            tables = [pd.read_csv(runs[p] / attack / "metrics.csv") for p in (procs, 1)]
            rows = [table[table["rule"] == rule] for table in tables]
            assert len(rows[1]) == ROUNDS * rows[1]["group"].nunique() > 0
            pd.testing.assert_frame_equal(rows[0], rows[1], check_exact=True)


@pytest.mark.parametrize("name", sorted(_sample_configs()))
def test_samples_and_a_single_shard_give_the_one_process_results(
    runs: dict[int, Path], name: str
) -> None:
    _same_files(runs[2] / name, runs[1] / name)


def test_ranks_hold_their_agents_only_where_the_attack_and_the_task_allow(
    runs: dict[int, Path],
) -> None:
    """Partitioned (byzmtl.engine.partition), each rank building its part of the geometric
    graph only and keeping the part's outline once its engine holds the edges (mimic's
    copied agent on every rank's table), unless the graph is dense or the task cannot be cut
    to a rank's agents."""
    for procs in BATCHES:
        engines = {name: (runs[procs] / name / "engine.txt").read_text() for name in BATCHES[procs]}
        whole = {"complete-one-rule", "har", "digits"}
        assert {name for name, engine in engines.items() if engine == "Simulation Graph"} == (
            whole & set(engines)
        ), engines
        partitioned = {engines[name] for name in set(engines) - whole}
        assert partitioned == {"PartitionedSimulation PartOutline"}, engines


def test_every_rank_ends_with_the_one_process_state(runs: dict[int, Path]) -> None:
    """The whole network's final state (models, rule and task states, containment counts),
    joined from the ranks' parts, on every rank: bit for bit one process's."""
    for procs, batch in BATCHES.items():
        for name in batch:
            expected = torch.load(runs[1] / f"{name}-state-0.pt")
            for rank in range(procs):
                state = torch.load(runs[procs] / f"{name}-state-{rank}.pt")
                assert state.keys() == expected.keys(), (name, rank)
                for key, value in expected.items():
                    same = state[key].numpy().tobytes() == value.numpy().tobytes()
                    assert same and state[key].shape == value.shape, (name, procs, rank, key)


def test_a_rank_holding_its_agents_holds_nothing_the_size_of_the_whole_graphs_edges(
    runs: dict[int, Path],
) -> None:
    """After a round of a one-rule run (where no per-edge array of a rank's can reach the whole
    graph's number of edges), a rank holding its own agents holds no array with a dimension of
    the whole graph's number of edges: its edges, rule states and weights are its receivers'.
    The control: a run of the first stage (a complete graph), whose ranks hold the whole graph."""
    held = {
        name: [(runs[2] / f"{name}-whole-{rank}.txt").read_text() for rank in range(2)]
        for name in ("one-rule", "complete-one-rule")
    }
    assert (runs[2] / "one-rule" / "engine.txt").read_text().startswith("PartitionedSimulation")
    assert held["one-rule"] == ["", ""], held["one-rule"]
    assert all(held["complete-one-rule"]), held["complete-one-rule"]


def test_the_attack_runs_have_five_shards_and_the_others_fewer() -> None:
    shards = {
        name: len(prepare(config).simulation.shards)
        for name, config in {"loss": _attack_config("constant"), **_sample_configs()}.items()
    }
    assert shards["loss"] == 5 and shards["one-shard"] == 1
    assert shards["har"] >= 2 and shards["digits"] >= 2, shards


@given(st.integers(0, 200), st.integers(1, 9))
def test_ranks_own_contiguous_ranges_that_cover_the_shards_in_order(
    shards: int, world: int
) -> None:
    ranges = [owned_range(shards, rank, world) for rank in range(world)]
    assert [s for owned in ranges for s in owned] == list(range(shards))
    sizes = [len(owned) for owned in ranges]
    assert max(sizes) - min(sizes) <= 1


def _cli(tmp_path: Path, name: str, *extra: str) -> list[str]:
    return [
        "run", "target-localization", "--agents", str(AGENTS), "--iterations", str(ROUNDS),
        "--attackers", "8", "--rules", "loss,distance,median,none",
        "--set", "shard_edges=360", "--out", str(tmp_path / name), "--quiet", "--no-progress",
        *extra,
    ]  # fmt: skip


def test_command_line_procs_and_two_torchrun_nodes_write_the_one_process_folder(
    tmp_path: Path,
) -> None:
    one = {**_attack_config("constant"), "rules": ["loss", "distance", "median", "none"]}
    result = run({**one, "shard_edges": 360})  # what _cli runs, in one process
    _tables(result, tmp_path / "p1")
    save_network(tmp_path / "p1" / "network.npz", result.experiment.graph, *_drawn(result))
    assert main(_cli(tmp_path, "p2", "--procs", "2")) == 0
    _same_files(tmp_path / "p2", tmp_path / "p1")
    networks = [load_network(tmp_path / f / "network.npz") for f in ("p2", "p1")]
    for name, value in vars(networks[1]).items():  # from the ranks' parts, the same figure
        assert np.array_equal(getattr(networks[0], name), value), name
    port = distributed.free_port()
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun is not None
    command = [
        torchrun, "--nnodes", "2", "--nproc-per-node", "1", "--master-addr", "127.0.0.1",
        "--master-port", str(port), "-m", "byzmtl", *_cli(tmp_path, "torchrun"),
    ]  # fmt: skip
    nodes = [
        subprocess.Popen(
            [command[0], "--node-rank", str(node), *command[1:]],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for node in range(2)
    ]
    outputs = [node.communicate(timeout=180)[0].decode() for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    _same_files(tmp_path / "torchrun", tmp_path / "p1")


def test_two_threads_per_process_write_the_one_process_folder_at_two_threads(
    tmp_path: Path,
) -> None:
    """The guarantee at more than one torch thread per process: 70,000 agents (the many-agents
    setting, partitioned; its reductions over agents are long enough for torch to split them
    over threads), ``--procs 2`` at two threads each against one process at two threads. In
    subprocesses, so that this process keeps its one thread."""
    argv = ["run", "target-localization", "--agents", "70000", "--iterations", "3",
            "--attackers", "7000", "--rules", "loss,none,median", "--threads", "2", "--quiet",
            "--no-progress"]  # fmt: skip
    for procs in (1, 2):
        out = ["--procs", str(procs), "--out", str(tmp_path / f"p{procs}")]
        command = [sys.executable, "-m", "byzmtl", *argv, *out]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
    _same_files(tmp_path / "p2", tmp_path / "p1")


def _drawn(result: Any) -> tuple[Any, ...]:
    experiment = result.experiment
    return experiment.groups, experiment.case.group_names, experiment.byzantine


FAILING_ATTACK = """
import os
from dataclasses import dataclass

import torch.distributed as dist

from byzmtl.attacks import ATTACKS
from byzmtl.attacks.paper import Constant
from byzmtl.config import ConfigError


@ATTACKS.register("fails-on-rank-1-NAME")
@dataclass
class FailsOnRank1(Constant):
    crash: bool = False

    def messages(self, x):
        if dist.is_initialized() and dist.get_rank() == 1 and x.iteration == 3:
            if self.crash:
                os._exit(3)
            raise ConfigError("attack_params.crash: rank 1 refuses round 3")
        return super().messages(x)
"""


@pytest.mark.parametrize("crash", [False, True])
def test_a_failing_rank_stops_every_rank_with_one_line_and_writes_nothing(
    tmp_path: Path, crash: bool, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ATTACKS, "_classes", dict(ATTACKS._classes))  # the plugin's goes after
    plugin = tmp_path / "failing.py"
    name = "crash" if crash else "error"
    plugin.write_text(FAILING_ATTACK.replace("NAME", name))
    argv = _cli(tmp_path, "out", "--procs", "2", "--plugin", str(plugin))
    argv += ["--attack", f"fails-on-rank-1-{name}", "--attack-param", f"crash={str(crash).lower()}"]
    started = time.monotonic()
    code = main(argv)
    elapsed = time.monotonic() - started
    errors = [line for line in capfd.readouterr().err.splitlines() if "error" in line]
    assert elapsed < 60, "a rank waited for a peer that had stopped"
    assert not (tmp_path / "out").exists()
    if crash:
        assert code != 0 and len(errors) <= 2, errors
        assert any("rank 1" in line for line in errors), errors
    else:  # the user's error, as one process reports it
        assert code == 2
        assert errors == ["byzmtl: error: attack_params.crash: rank 1 refuses round 3"]


def test_procs_needs_a_group_and_agrees_with_its_size(tmp_path: Path) -> None:
    from byzmtl.config import ConfigError

    with pytest.raises(ConfigError, match=r"^procs: 2 processes need a torch\.distributed group"):
        prepare({**_attack_config("constant"), "procs": 2})
    assert main([*_cli(tmp_path, "zero"), "--procs", "0"]) == 2
    assert not (tmp_path / "zero").exists()


def test_a_rule_check_failing_on_one_ranks_receivers_is_the_one_process_error(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Each rank checks its own receivers; the first failing rank's error, naming the agent by
    its id in the whole graph, is what one process reports (agent 35, on rank 1's range)."""
    pairs = [(k, (k + h) % AGENTS) for k in range(AGENTS) for h in (1, 2)]
    pairs = [(a, b) for a, b in pairs if 35 not in (a, b) or {a, b} <= {33, 34, 35}]
    edges = tmp_path / "ring.txt"
    edges.write_text("".join(f"{a} {b}\n" for a, b in pairs))
    argv = [
        "run", "target-localization", "--agents", str(AGENTS), "--iterations", "2",
        "--attackers", "0", "--rules", "trimmed-mean", "--set", "rule_params.trimmed-mean.b=2",
        "--set", "graph.kind=edgelist", "--set", f"graph.path={edges}", "--quiet",
        "--no-progress",
    ]  # fmt: skip
    errors = []
    for procs in ("1", "2"):
        assert main([*argv, "--out", str(tmp_path / procs), "--procs", procs]) == 2
        errors.append([line for line in capfd.readouterr().err.splitlines() if "error" in line])
    assert errors[0] == errors[1], errors
    assert len(errors[0]) == 1 and "agent 35 has 3 agents" in errors[0][0], errors
