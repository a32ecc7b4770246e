"""The engine on every available device (CPU always; CUDA and MPS where present), a round that
never reads a value back from an accelerator (no host synchronisation), and rules that keep
their state on the device of their edges, checked without a GPU on torch's ``meta`` device
(tensors with a shape and a device but no data)."""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
import runpy
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import byzmtl
from byzmtl import graph as graphs
from byzmtl import ops
from byzmtl.attacks import ATTACKS
from byzmtl.experiment import prepare
from byzmtl.neighbourhoods import Neighbourhoods
from byzmtl.rules import RULES

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DEVICES = (
    ["cpu"] + ["cuda"] * torch.cuda.is_available() + ["mps"] * torch.backends.mps.is_available()
)


def branching_modules() -> list[types.ModuleType]:
    """Every byzmtl module that asks ``branches_freely`` (found, not listed by hand, so that a
    new CPU-only branch cannot escape the test)."""
    names = [info.name for info in pkgutil.walk_packages(byzmtl.__path__, "byzmtl.")]
    modules = [
        importlib.import_module(name)
        for name in names
        if name not in ("byzmtl.ops", "byzmtl.__main__")
    ]
    return [module for module in modules if hasattr(module, "branches_freely")]


def test_the_branching_modules_are_found() -> None:
    names = {module.__name__ for module in branching_modules()}
    assert {"byzmtl.engine.containment", "byzmtl.tasks.neural.losses"} <= names


SYNCING = ["__bool__", "__int__", "__float__", "__index__", "item", "tolist", "numpy",
           "nonzero", "unique", "unique_consecutive", "masked_select"]  # fmt: skip


def tl(**settings: object) -> dict:
    return {"case": "target-localization", "attackers": 5, "task": {"agents": 30, "iterations": 40},
            **settings}  # fmt: skip


@contextlib.contextmanager
def as_on_an_accelerator(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Take the accelerator's branch-free paths on the CPU, and make every operation that would
    read a value back from an accelerator raise."""
    for module in branching_modules():
        monkeypatch.setattr(module, "branches_freely", lambda tensor: False)
    with monkeypatch.context() as patch:

        def refuse(name: str):
            def raising(*args: object, **kwargs: object) -> None:
                raise AssertionError(f"a round read a value from the device: {name}")

            return raising

        for name in SYNCING:
            patch.setattr(torch.Tensor, name, refuse(f"Tensor.{name}"))
        for name in ("nonzero", "unique", "unique_consecutive", "masked_select"):
            patch.setattr(torch, name, refuse(f"torch.{name}"))
        yield


@pytest.mark.parametrize("graph", ["complete", "geometric"])
@pytest.mark.parametrize("attack", ATTACKS.names())
def test_a_round_reads_no_value_from_the_device(graph: str, attack: str, monkeypatch) -> None:
    rules = RULES.names()
    simulation = prepare(tl(rules=rules, attack=attack, graph={"kind": graph})).simulation
    state, _ = simulation.step(simulation.init_state())  # caches and layouts are built once
    reference, _ = simulation.step(state)
    with as_on_an_accelerator(monkeypatch):
        state, _ = simulation.step(state)
    torch.testing.assert_close(state.models, reference.models, rtol=1e-12, atol=1e-12)


def neural(case: str, folder: Path, **task: object) -> dict:
    return {"case": case, "attackers": 2, "rules": ["loss", "distance", "average"],
            "task": {"data_dir": str(folder), "epochs": 1, **task}}  # fmt: skip


@pytest.mark.parametrize("learns", [True, False], ids=["local-steps", "no-local-steps"])
@pytest.mark.parametrize("case", ["har", "digits"])
def test_a_learning_round_reads_no_value_from_the_device(
    case: str, learns: bool, har_sample: Path, mnist_sample: Path, tmp_path: Path, monkeypatch
) -> None:
    """HAR scores all pairs at once (and the attacked edges one by one), digits scores edge by
    edge in two size groups (MNIST and synthetic batches differ)."""
    monkeypatch.setenv("BYZMTL_CACHE", str(tmp_path))
    if case == "har":
        config = neural("har", har_sample, agents=8)
    else:
        config = neural("digits", mnist_sample, train_per_agent=32, test_per_agent=16,
                        mnist_batch=8, synthetic_batch=16)  # fmt: skip
    config["attack"] = "paper-scaled" if learns else "noise"
    simulation = prepare(config).simulation
    state, _ = simulation.step(simulation.init_state())
    reference, _ = simulation.step(state)
    with as_on_an_accelerator(monkeypatch):
        state, _ = simulation.step(state)
    torch.testing.assert_close(state.models, reference.models, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_the_engine_runs_on_every_device_like_on_the_cpu(device: str) -> None:
    config = tl(rules=["loss", "distance", "average", "none"], attack="paper-scaled")
    on_cpu = prepare(config).simulation.run()
    on_device = prepare({**config, "device": device}).simulation.run()
    assert on_device.models.device.type == device
    assert torch.isfinite(on_device.models).all()
    torch.testing.assert_close(on_device.models.cpu(), on_cpu.models, rtol=1e-9, atol=1e-9)
    again = prepare({**config, "device": device}).simulation.run()
    assert torch.equal(again.models, on_device.models)  # the same bits on the same device


def test_branches_are_free_on_the_cpu_only() -> None:
    assert ops.branches_freely(torch.zeros(1))
    assert not ops.branches_freely(torch.zeros(1, device="meta"))


def state_devices(rule_name: str, edges: Neighbourhoods) -> set[str]:
    state = RULES.create(rule_name).init_state(edges, torch.float32)
    return {value.device.type for value in [*state.edges.values(), *state.agents.values()]}


@pytest.mark.parametrize("name", RULES.names())
def test_every_rule_builds_its_state_on_the_edges_device(name: str) -> None:
    edges = Neighbourhoods.from_graph(graphs.complete(6), "meta")
    assert state_devices(name, edges) <= {"meta"}


def test_the_custom_rule_example_builds_its_state_on_the_edges_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The example's rule, its module run with registration switched off (the registries stay
    as they are for the other tests)."""
    for registry in (RULES, ATTACKS):
        monkeypatch.setattr(registry, "register", lambda name: lambda cls: cls)
    example = runpy.run_path(str(EXAMPLES / "custom_rule.py"))
    edges = Neighbourhoods.from_graph(graphs.complete(6), "meta")
    state = example["SoftMin"]().init_state(edges, torch.float32)
    assert {value.device.type for value in state.edges.values()} == {"meta"}
