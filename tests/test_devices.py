"""Rules keep their state on the device of the edges they are given, checked without a GPU on
torch's ``meta`` device (tensors with a shape and a device but no data)."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import torch

from byzmtl import graph as graphs
from byzmtl.attacks import ATTACKS
from byzmtl.rules import RULES
from byzmtl.rules.base import Neighbourhoods

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def state_devices(rule_name: str, edges: Neighbourhoods) -> set[str]:
    state = RULES.create(rule_name).init_state(edges, torch.float32)
    return {value.device.type for value in state.values()}


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
    assert {value.device.type for value in state.values()} == {"meta"}
