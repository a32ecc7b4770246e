"""Run configuration: one validated model, read from TOML, overridden by flags, written back.

Every setting of a run lives here; a case study's own settings sit in the ``[task]`` table and are
validated by that case study's settings model. Errors are :class:`ConfigError` with a one-line
message that names the offending field.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import (
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from byzmtl.attacks import ATTACKS
from byzmtl.registry import RegistryError
from byzmtl.rules import RULES
from byzmtl.scalars import ExactScalars
from byzmtl.tasks import CASES

DEFAULT_RULES = ["loss", "distance", "average", "none"]
# a setting one kind of case study has, and the one that plays its part in the others: a run's
# length is counted in iterations (target localization) or in epochs (learning case studies)
_INSTEAD = {"epochs": "iterations", "iterations": "epochs"}


class ConfigError(ValueError):
    """An invalid run configuration; the message names the field."""


class GraphSettings(ExactScalars):
    """The communication graph. ``kind`` picks the builder; the other fields are its parameters.

    A run's ``[graph]`` table may give only some fields: :meth:`RunConfig.resolved` fills in the
    rest from the case study's default graph (``kind`` left out: the case study's kind).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: (
        Literal[
            "geometric",
            "complete",
            "ring",
            "erdos-renyi",
            "k-regular",
            "edgelist",
            "graphml",
            "networkx",
        ]
        | None
    ) = Field(None, description="None until resolved: the case study's kind")
    radius: float = Field(1.0, gt=0, description="geometric: link agents within this distance")
    max_neighbours: int | None = Field(
        10, ge=1, description="geometric: cap on |N_k| (self included), sampled at random"
    )
    hops: int = Field(1, ge=1, description="ring: neighbours on either side")
    p: float = Field(0.1, ge=0, le=1, description="erdos-renyi: link probability")
    k: int = Field(4, ge=1, description="k-regular: degree (self not counted)")
    path: str | None = Field(
        None, description="edgelist: file of 'u v' lines; graphml: a GraphML file (nodes 0..n-1)"
    )
    directed: bool = Field(False, description="edgelist: 'u v' means u sends to v only")


class RunConfig(ExactScalars):
    """One run: a case study, its network, the rules to compare, the attack."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    case: str
    seed: int = Field(0, ge=0)
    rules: list[str] = Field(default_factory=lambda: list(DEFAULT_RULES), min_length=1)
    rule_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    attack: str | None = None
    attack_params: dict[str, Any] = Field(default_factory=dict)
    attackers: int = Field(0, ge=0, description="number of Byzantine agents, chosen at random")
    byzantine: list[int] | None = Field(None, description="explicit Byzantine agent ids")
    nu: float | None = Field(None, gt=0, lt=1, description="forgetting factor of scores")
    r0: float | None = Field(None, gt=0, description="initial accumulated score")
    percentiles: list[float] = Field(
        default_factory=list,
        description="percentiles of the normal agents recorded besides mean, min and max "
        "(e.g. [10, 90]: <metric>_p10 and _p90 columns, and figure bands from 10 to 90)",
    )
    dtype: Literal["float32", "float64"] | None = None
    device: str = "cpu"
    deterministic: bool = Field(
        False,
        description="torch's deterministic algorithms for the run: bit-identical repeats on "
        "CUDA too, at some cost in speed (byzmtl.determinism)",
    )
    checkpoint_every: int | None = Field(
        None,
        ge=1,
        description="byzmtl run: write a checkpoint into the results folder every this many "
        "rounds (target localization) or epochs (learning case studies), to continue an "
        "interrupted run with byzmtl run --resume DIR (default: none)",
    )
    procs: int = Field(
        1,
        ge=1,
        description="processes the run is split over (byzmtl run --procs, or torchrun's); "
        "the results are those of one process",
    )
    shard_edges: int | None = Field(
        None,
        ge=1,
        description="edges x rules weighed and combined at once (None: the engine's default, "
        "byzmtl.engine.SHARD_EDGES); the shards are also what processes share out",
    )
    graph: GraphSettings | None = None
    task: dict[str, Any] = Field(default_factory=dict)

    @field_validator("case")
    @classmethod
    def _known_case(cls, value: str) -> str:
        CASES.get(value)
        return value

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, value: list[str]) -> list[str]:
        for name in value:
            RULES.get(name)
        if len(set(value)) != len(value):
            raise ValueError("a rule is listed twice")
        return value

    @field_validator("attack")
    @classmethod
    def _known_attack(cls, value: str | None) -> str | None:
        if value is not None:
            ATTACKS.get(value)
        return value

    @field_validator("percentiles")
    @classmethod
    def _percentages(cls, value: list[float]) -> list[float]:
        if not all(0 < p < 100 for p in value):
            raise ValueError("every percentile must lie in (0, 100)")
        return sorted(set(value))

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        unused = sorted(set(self.rule_params) - set(self.rules))
        if unused:
            known = unused[0] in RULES.names()
            raise ValueError(
                f"rule_params.{unused[0]}: "
                + ("that rule is not in rules" if known else f"unknown rule {unused[0]!r}")
                + f" (rules: {', '.join(self.rules)})"
            )
        if self.byzantine is not None and "attackers" in self.model_fields_set:
            count = len(set(self.byzantine))
            if self.attackers != count:
                raise ValueError(
                    f"byzantine: {count} explicit ids and attackers = {self.attackers} both "
                    "choose the Byzantine agents; give one of them (or the same number)"
                )
        return self

    def resolved(self) -> RunConfig:
        """This run with every default filled in from the case study (as config.toml holds it)."""
        case = CASES.get(self.case)
        defaults = case.defaults
        attack = self.attack or defaults.attack
        inherited = defaults.attack_params if attack == defaults.attack else {}
        attack_params = {**inherited, **self.attack_params}
        try:
            task = case.settings_model.model_validate(self.task).model_dump(mode="json")
        except ValidationError as error:
            first = error.errors()[0]
            if first["type"] == "extra_forbidden":
                fields = case.settings_model.model_fields
                name = str(first["loc"][0])
                other = _INSTEAD.get(name)
                if other in fields:
                    raise ConfigError(
                        f"task.{name}: {self.case} has no {name}; its length is task.{other} "
                        f"(--{other} N)"
                    ) from None
                raise ConfigError(
                    f"task.{name}: not a setting of {self.case} (its settings: {', '.join(fields)})"
                ) from None
            raise ConfigError(_one_line(error, prefix="task")) from None
        try:
            graph = GraphSettings.model_validate(self._graph_over(defaults.graph))
        except ValidationError as error:
            raise ConfigError(_one_line(error, prefix="graph")) from None
        if graph.kind is None:
            raise ConfigError(f"graph.kind: case study {self.case!r} has no default; name one")
        attackers = self.attackers if self.byzantine is None else len(set(self.byzantine))
        return self.model_copy(
            update={
                "attackers": attackers,
                "attack": attack,
                "attack_params": attack_params,
                "nu": defaults.nu if self.nu is None else self.nu,
                "r0": defaults.r0 if self.r0 is None else self.r0,
                "dtype": self.dtype or defaults.dtype,
                "graph": graph,
                "task": task,
            }
        )

    def _graph_over(self, default: dict[str, Any]) -> dict[str, Any]:
        """The graph fields given in this configuration over the case study's default graph.

        Fields left out keep the case study's values (``--set graph.max_neighbours=6`` keeps its
        kind and radius). A ``kind`` other than the case study's starts from that kind's own
        defaults instead: the case study's parameters belong to its own kind.
        """
        given = self.graph.model_dump(exclude_unset=True) if self.graph is not None else {}
        if given.get("kind") is None:
            given.pop("kind", None)
        same_kind = given.get("kind", default.get("kind")) == default.get("kind")
        return {**default, **given} if same_kind else given

    def to_toml(self) -> str:
        """The configuration as TOML (settings left at None are omitted: TOML has no null)."""
        return tomli_w.dumps(_without_none(self.model_dump(mode="json")))


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def _one_line(error: ValidationError, prefix: str = "") -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in (prefix, *first["loc"]) if part != "")
    message = first["msg"].removeprefix("Value error, ")
    return f"{location}: {message}" if location else message  # model checks name their field


def parse(data: dict[str, Any]) -> RunConfig:
    """Validate a configuration dictionary; errors name the bad field."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_one_line(error)) from None
    except RegistryError as error:  # pragma: no cover - validators wrap these as ValidationError
        raise ConfigError(str(error)) from None


def read_toml(path: str | Path) -> dict[str, Any]:
    """The raw contents of a TOML configuration file."""
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except OSError as error:
        raise ConfigError(f"config: cannot read {path}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config: {path} is not valid TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"config: {path} is not UTF-8 text (byte {error.start}: {error.reason})"
        ) from None


def merge(base: dict[str, Any], overrides: dict[str, Any], _prefix: str = "") -> dict[str, Any]:
    """``base`` with ``overrides`` applied; nested tables are merged key by key. A table on one
    side and a value on the other (``[task]`` in the file, ``--set task=1``) is a
    :class:`ConfigError` naming the setting: neither silently replaces the other."""
    out = dict(base)
    for key, value in overrides.items():
        name = f"{_prefix}{key}"
        if key in out and isinstance(value, dict) != isinstance(out[key], dict):
            table, other = (value, out[key]) if isinstance(value, dict) else (out[key], value)
            raise ConfigError(
                f"{name}: given both as a table ({', '.join(map(str, table)) or 'empty'}) and as "
                f"a value ({other!r})"
            )
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value, f"{name}.")
        else:
            out[key] = value
    return out


def dotted(assignments: list[str]) -> dict[str, Any]:
    """``["task.mu=0.2", "seed=3"]`` -> nested dict; values parsed as TOML where possible."""
    out: dict[str, Any] = {}
    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        node = out
        *parents, leaf = key.strip().split(".")
        for depth, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                table = ".".join(parents[: depth + 1])
                raise ConfigError(
                    f"{table}: --set {item!r} puts a setting in it, but an earlier --set made "
                    "it a value"
                )
        if isinstance(node.get(leaf), dict) and not isinstance(value, dict):
            raise ConfigError(
                f"{key.strip()}: --set {item!r} makes it a value, but an earlier --set put "
                "settings in it"
            )
        node[leaf] = value
    return out
