"""Rules keep their state on the device of the edges they are given, checked without a GPU on
torch's ``meta`` device (tensors with a shape and a device but no data)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from byzmtl import graph as graphs
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


def test_the_custom_rule_example_builds_its_state_on_the_edges_device() -> None:
    """In a fresh interpreter: the example registers its rule in the global registry."""
    script = (
        "import runpy, sys; from tests.test_devices import *\n"
        f"runpy.run_path({str(EXAMPLES / 'custom_rule.py')!r})\n"
        "edges = Neighbourhoods.from_graph(graphs.complete(6), 'meta')\n"
        "print(sorted(state_devices('softmin', edges)))\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2] == "['meta']"
