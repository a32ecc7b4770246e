"""Settings models whose numbers and switches are taken only as what they are.

pydantic's lax mode turns ``true`` into the integer 1, ``1`` into True and ``2.0`` into 2; a
misspelt setting then runs as something else without a word. :class:`ExactScalars` refuses,
before validation, every value given for a field declared ``int``, ``float`` or ``bool`` (alone
or optional) that is not of that type:

    int field   <- int (not bool)          float field <- int or float (not bool)
    bool field  <- bool

Lists, tuples and other fields keep pydantic's own rules (TOML arrays are lists, tuple fields
take them).
"""

from __future__ import annotations

import types
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationInfo, field_validator

_ACCEPTS: dict[type, tuple[type, ...]] = {int: (int,), float: (int, float), bool: (bool,)}


def scalar_kind(annotation: Any) -> type | None:
    """int, float or bool where ``annotation`` is one of them or one of them or None."""
    if annotation in _ACCEPTS:
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        kinds = [a for a in get_args(annotation) if a is not type(None)]
        if len(kinds) == 1 and kinds[0] in _ACCEPTS:
            return kinds[0]
    return None


class ExactScalars(BaseModel):
    """A model whose int, float and bool fields take values of their own type only."""

    @field_validator("*", mode="before")
    @classmethod
    def _exact_scalars(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        kind = None if field is None or value is None else scalar_kind(field.annotation)
        if kind is not None and (
            isinstance(value, bool) != (kind is bool) or not isinstance(value, _ACCEPTS[kind])
        ):
            raise ValueError(f"{value!r} is not {_NAMES[kind]}")
        return value


_NAMES = {int: "an integer", float: "a number", bool: "true or false"}
