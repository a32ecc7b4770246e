"""Every rule's and attack's parameters: their constraints are declared in their type hints and
checked by the registry, in one place (see :mod:`byzmtl.registry`).

For every parameter of every registered rule and attack, hypothesis draws values that break its
declaration (below or above a bound, the wrong type, NaN and infinities, a fraction for an
integer) and values that keep it: the first are one-line errors naming the plug-in and the
parameter, the second are accepted (no other check hides in the class).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Annotated, Any, Literal, Union

import annotated_types as at
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byzmtl.attacks import ATTACKS
from byzmtl.registry import Registry, RegistryError
from byzmtl.rules import RULES

REGISTRIES: tuple[Registry[Any], ...] = (RULES, ATTACKS)
# the plug-ins whose __post_init__ checks a relation between parameters, which no hint states
RELATIONS = {("attack", "noise"): "low < high"}


@dataclasses.dataclass(frozen=True)
class Declared:
    """A parameter's type hint, taken apart."""

    base: Any  # int, float, bool, str, or a Literal[...]
    bounds: tuple[Any, ...]  # annotated_types Gt, Ge, Lt, Le
    optional: bool  # None is allowed


def declared(hint: Any) -> Declared:
    optional = False
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional, (hint,) = len(args) < len(typing.get_args(hint)), args
    bounds: list[Any] = []
    if typing.get_origin(hint) is Annotated:
        hint, *metadata = typing.get_args(hint)
        for item in metadata:
            bounds.extend(item if isinstance(item, at.GroupedMetadata) else [item])
    return Declared(hint, tuple(bounds), optional)


def parameters() -> list[Any]:
    cases = []
    for registry in REGISTRIES:
        for name in registry.names():
            cls = registry.get(name)
            hints = typing.get_type_hints(cls, include_extras=True)
            for field in dataclasses.fields(cls):
                if field.init:
                    case = (registry, name, field.name, declared(hints[field.name]))
                    cases.append(pytest.param(*case, id=f"{registry.kind}-{name}-{field.name}"))
    return cases


def limit(bound: Any) -> float:
    return next(getattr(bound, key) for key in ("gt", "ge", "lt", "le") if hasattr(bound, key))


def numbers(
    base: Any, low: float | None, high: float | None, open_low: bool, open_high: bool
) -> st.SearchStrategy[Any]:
    """Finite numbers of type ``base`` between ``low`` and ``high`` (None: unbounded), either
    end open or closed."""
    if base is int:
        first = None if low is None else math.floor(low) + 1 if open_low else math.ceil(low)
        last = None if high is None else math.ceil(high) - 1 if open_high else math.floor(high)
        return st.integers(first, last)
    return st.floats(
        low,
        high,
        allow_nan=False,
        allow_infinity=False,
        exclude_min=open_low and low is not None,
        exclude_max=open_high and high is not None,
    )


def breaking(base: Any, bound: Any) -> st.SearchStrategy[Any]:
    """Finite numbers on the wrong side of one bound."""
    if isinstance(bound, at.Gt | at.Ge):  # too low: up to the limit, itself included for Gt
        return numbers(base, None, limit(bound), False, isinstance(bound, at.Ge))
    return numbers(base, limit(bound), None, isinstance(bound, at.Le), False)


def keeping(base: Any, bounds: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    """Finite numbers that keep every bound."""
    lows = [b for b in bounds if isinstance(b, at.Gt | at.Ge)]
    highs = [b for b in bounds if isinstance(b, at.Lt | at.Le)]
    low = max(lows, key=limit, default=None)
    high = min(highs, key=limit, default=None)
    return numbers(
        base,
        None if low is None else limit(low),
        None if high is None else limit(high),
        isinstance(low, at.Gt),
        isinstance(high, at.Lt),
    )


def invalid(d: Declared) -> st.SearchStrategy[Any]:
    """Values that break the declaration ``d``."""
    wrong: list[Any] = ["abc", [1.0], {"a": 1}] + ([] if d.optional else [None])
    if typing.get_origin(d.base) is Literal:
        allowed = typing.get_args(d.base)
        return st.sampled_from([v for v in [*wrong, False, 0, True, 1] if v not in allowed])
    if d.base is bool:
        return st.sampled_from([*wrong, 2, -1.5])
    assert d.base in (int, float), f"no invalid values for {d.base}"
    strategies = [st.sampled_from([*wrong, math.nan, math.inf, -math.inf])]
    strategies += [breaking(d.base, bound) for bound in d.bounds]
    if d.base is int:
        strategies.append(st.floats(-1e6, 1e6).filter(lambda v: not v.is_integer()))
    return st.one_of(strategies)


def valid(d: Declared) -> st.SearchStrategy[Any]:
    """Values that keep the declaration ``d``."""
    if typing.get_origin(d.base) is Literal:
        values = st.sampled_from(typing.get_args(d.base))
    elif d.base is bool:
        values = st.booleans()
    else:
        assert d.base in (int, float), f"no valid values for {d.base}"
        values = keeping(d.base, d.bounds)
    return st.one_of(values, st.none()) if d.optional else values


@pytest.mark.parametrize(("registry", "name", "parameter", "hint"), parameters())
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_every_declared_constraint_is_checked_by_the_registry(
    registry: Registry[Any], name: str, parameter: str, hint: Declared, data: st.DataObject
) -> None:
    default = registry.parameters(name)[parameter]
    registry.create(name, {parameter: default})  # every default keeps its declaration
    value = data.draw(invalid(hint), label="invalid")
    with pytest.raises(RegistryError) as caught:
        registry.create(name, {parameter: value})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{registry.kind} {name!r}: parameter {parameter}={value!r}: ")
    if (registry.kind, name) not in RELATIONS:
        registry.create(name, {parameter: data.draw(valid(hint), label="valid")})


def test_a_plugin_checks_only_relations_between_its_parameters() -> None:
    """The registry checks each parameter; a class's own __post_init__ is left for relations
    (and its error still names the plug-in, in one line)."""
    checking = {
        (registry.kind, name)
        for registry in REGISTRIES
        for name in registry.names()
        if "__post_init__" in vars(registry.get(name))
    }
    assert checking == set(RELATIONS)
    with pytest.raises(RegistryError, match=r"^attack 'noise': noise needs low < high"):
        ATTACKS.create("noise", {"low": 0.5, "high": 0.5})
