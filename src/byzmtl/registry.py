"""Name -> class registries for the plug-ins (rules, attacks, case studies).

Plug-ins are dataclasses; ``create`` validates the parameters a user gives against the fields of
the class: a misspelt parameter is an error that names it, never a silent default, and a value
is checked against the field's type hint (``f: int`` refuses 1.5, ``value: float`` refuses
"abc" and non-finite numbers).

A parameter's constraints are declared in its type hint and checked here, in one place, for
every plug-in: bounds with ``typing.Annotated`` and ``annotated_types`` (``tau:
Annotated[float, Gt(0)]``, ``rho: Annotated[float, Interval(gt=0, le=1)]``, ``m: Annotated[int,
Ge(1)] | None``), fixed values with ``Literal``. Every failure is a one-line
:class:`RegistryError` naming the plug-in and the parameter. A plug-in's ``__post_init__`` checks
only relations between parameters (``noise``: low < high), which no single hint can state; its
ValueError becomes a RegistryError naming the plug-in. (A plug-in built directly, without
``create``, is not validated.)
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, Generic, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

T = TypeVar("T")


class RegistryError(ValueError):
    """An unknown name or an invalid parameter."""


class Registry(Generic[T]):
    """A named collection of plug-in classes of one kind (``kind`` is used in error messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: make ``cls`` available as ``name``."""

        def add(cls: type[T]) -> type[T]:
            if name in self._classes:
                raise RegistryError(f"{self.kind} {name!r} is already registered")
            cls.name = name  # type: ignore[attr-defined]
            self._classes[name] = cls
            return cls

        return add

    def names(self) -> list[str]:
        return sorted(self._classes)

    def get(self, name: str) -> type[T]:
        if name not in self._classes:
            known = ", ".join(self.names())
            raise RegistryError(f"unknown {self.kind} {name!r} (known: {known})")
        return self._classes[name]

    def parameters(self, name: str) -> dict[str, Any]:
        """The parameters of ``name`` with their defaults (``None`` when required)."""
        cls = self.get(name)
        if not dataclasses.is_dataclass(cls):
            return {}
        out: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
            else:
                out[f.name] = None
        return out

    def validate(self, name: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``params`` checked against the parameters of ``name`` and converted to their declared
        types (``value: float`` takes 2.0 for 2); an unknown parameter or a value its type hint
        refuses (strictly: a bool or a string is no number) is a one-line
        :class:`RegistryError`."""
        cls = self.get(name)
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.parameters(name)))
        if unknown:
            raise RegistryError(
                f"{self.kind} {name!r} has no parameter {unknown[0]!r} "
                f"(parameters: {', '.join(self.parameters(name)) or 'none'})"
            )
        hints = _type_hints(cls)
        for key, value in params.items():
            if key in hints:
                try:
                    params[key] = _adapter(hints[key]).validate_python(value)
                except ValidationError as error:
                    problem = error.errors()[0]["msg"]
                    raise RegistryError(
                        f"{self.kind} {name!r}: parameter {key}={value!r}: {problem}"
                    ) from None
        return params

    def create(self, name: str, params: Mapping[str, Any] | None = None) -> T:
        """An instance of ``name`` built from ``params`` (checked by :meth:`validate`)."""
        params = self.validate(name, params)
        try:
            return self.get(name)(**params)
        except (TypeError, ValueError) as error:
            raise RegistryError(f"{self.kind} {name!r}: {error}") from error


def _type_hints(cls: type) -> dict[str, Any]:
    """The resolved type hints of a dataclass's fields (empty when they cannot be resolved)."""
    try:
        return typing.get_type_hints(cls, include_extras=True)
    except (NameError, TypeError):
        return {}


@cache
def _adapter(hint: Any) -> TypeAdapter:
    """A validator for values of type ``hint``: finite numbers only, and strict (True is not 1,
    "15" is not a number, 2.0 is not an integer); an integer is taken for a float."""
    return TypeAdapter(hint, config=ConfigDict(allow_inf_nan=False, strict=True))
