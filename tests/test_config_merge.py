"""A run's partial ``[graph]`` and ``[task]`` tables merge into the case study's defaults.

``--set graph.X=...`` or ``--set task.X=...`` alone changes that one setting and keeps every other
default of the case study; a graph ``kind`` other than the case study's starts from that kind's
defaults; the resolved configuration survives config.toml unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import tomllib

from byzmtl.cli import main
from byzmtl.config import GraphSettings, RunConfig, dotted, parse
from byzmtl.tasks import CASES

CASE_NAMES = CASES.names()
KINDS = typing.get_args(typing.get_args(GraphSettings.model_fields["kind"].annotation)[0])
# for every graph parameter, a valid value that differs from its default
GRAPH_VALUES = {
    "radius": 0.5,
    "max_neighbours": 6,
    "hops": 2,
    "p": 0.5,
    "k": 2,
    "path": "edges.txt",
    "directed": True,
}


def _toml_value(value: Any) -> str:
    return tomli_w.dumps({"v": value}).removeprefix("v = ").strip()


def resolve(case: str, *assignments: str) -> RunConfig:
    """The resolved configuration of ``byzmtl run CASE --set A1 --set A2 ...``."""
    return parse({**dotted(list(assignments)), "case": case}).resolved()


def _other(value: Any, annotation: Any) -> Any:
    """A value of the field's type that differs from ``value`` (its default)."""
    options = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return next(option for option in typing.get_args(annotation) if option != value)
    if options and typing.get_origin(options[0]) is typing.Literal:
        return _other(value, options[0])
    simple = {int: 1, float: 0.5, str: "other"}
    plain = [simple[option] for option in options if option in simple]
    if value is None and plain:  # the first plain type the field allows
        return plain[0]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.5
    if isinstance(value, str):
        return f"{value}-other"
    if isinstance(value, (list, tuple)):
        return [_other(item, None) for item in value]
    raise AssertionError(f"add a rule to _other for {value!r} ({annotation})")


def _task_fields() -> list[tuple[str, str]]:
    return [
        (case, name) for case in CASE_NAMES for name in CASES.get(case).settings_model.model_fields
    ]


def test_graph_values_cover_every_parameter() -> None:
    assert set(GRAPH_VALUES) == set(GraphSettings.model_fields) - {"kind"}
    defaults = GraphSettings()
    for name, value in GRAPH_VALUES.items():
        assert getattr(defaults, name) != value, name


@pytest.mark.parametrize("name", sorted(GRAPH_VALUES))
@pytest.mark.parametrize("case", CASE_NAMES)
def test_one_graph_setting_alone_keeps_the_case_studys_graph(case: str, name: str) -> None:
    default = resolve(case).graph
    assert default is not None and default.kind == CASES.get(case).defaults.graph["kind"]
    value = GRAPH_VALUES[name]
    config = resolve(case, f"graph.{name}={_toml_value(value)}")
    assert config.graph == default.model_copy(update={name: value})


@pytest.mark.parametrize(("case", "name"), _task_fields())
def test_one_task_setting_alone_keeps_the_other_defaults(case: str, name: str) -> None:
    model = CASES.get(case).settings_model
    field = model.model_fields[name]
    value = _other(field.get_default(call_default_factory=True), field.annotation)
    default = resolve(case).task
    config = resolve(case, f"task.{name}={_toml_value(value)}")
    expected = model.model_validate({name: value}).model_dump(mode="json")[name]
    assert config.task == {**default, name: expected} and expected != default[name]


@pytest.mark.parametrize("kind", KINDS)
def test_another_kind_starts_from_that_kinds_defaults(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES.get("target-localization")
    geometric = {"kind": "geometric", "radius": 0.5, "max_neighbours": 3}
    monkeypatch.setattr(case, "defaults", dataclasses.replace(case.defaults, graph=geometric))
    config = resolve("target-localization", f'graph.kind="{kind}"', "graph.k=2")
    if kind == "geometric":  # the case study's own kind: its parameters are kept
        assert config.graph == GraphSettings(**geometric, k=2)
    else:
        assert config.graph == GraphSettings(kind=kind, k=2)
    kept = resolve("target-localization", "graph.max_neighbours=6").graph
    assert kept == GraphSettings(kind="geometric", radius=0.5, max_neighbours=6)


def _variants(case: str) -> dict[str, tuple[str, ...]]:
    """``--set`` assignments of a few kinds, for ``case``."""
    name, field = next(iter(CASES.get(case).settings_model.model_fields.items()))
    task_value = _other(field.get_default(call_default_factory=True), field.annotation)
    return {
        "defaults": (),
        "one-graph-field": ("graph.max_neighbours=6",),
        "other-kind": ('graph.kind="ring"', "graph.hops=2"),
        "one-task-field": (f"task.{name}={_toml_value(task_value)}",),
    }


@pytest.mark.parametrize("variant", list(_variants("target-localization")))
@pytest.mark.parametrize("case", CASE_NAMES)
def test_resolved_configuration_round_trips_through_config_toml(case: str, variant: str) -> None:
    config = resolve(case, *_variants(case)[variant])
    assert config.resolved() == config
    written = tomllib.loads(config.to_toml())
    graph = config.graph
    assert graph is not None
    assert set(written["graph"]) == {k for k, v in graph.model_dump().items() if v is not None}
    assert parse(written).resolved() == config


def test_the_readme_variant_runs_and_reruns_from_its_config(tmp_path: Path) -> None:
    out, again = tmp_path / "variant", tmp_path / "again"
    argv = ["run", "target-localization", "--set", "task.mu=0.2", "--set", "graph.max_neighbours=6"]
    quiet = ["--iterations", "5", "--no-progress", "--quiet"]
    assert main([*argv, *quiet, "--out", str(out)]) == 0
    written = tomllib.loads((out / "config.toml").read_text())
    assert written["task"]["mu"] == 0.2 and written["task"]["iterations"] == 5
    assert written["graph"]["kind"] == "geometric" and written["graph"]["radius"] == 1.0
    assert written["graph"]["max_neighbours"] == 6
    config = str(out / "config.toml")
    assert main(["run", "--config", config, "--out", str(again), "--no-progress", "--quiet"]) == 0
    assert (again / "metrics.csv").read_text() == (out / "metrics.csv").read_text()
    assert (
        json.loads((again / "summary.json").read_text())["edges"]
        == (json.loads((out / "summary.json").read_text())["edges"])
    )
