"""Every int, float and bool setting of a run, its graph and every case study takes values of
its own type only (byzmtl.scalars): a wrong type is refused with the field named, the right one
is accepted."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from byzmtl.config import GraphSettings, RunConfig
from byzmtl.scalars import scalar_kind
from byzmtl.tasks import CASES

MODELS: list[type[BaseModel]] = [
    RunConfig,
    GraphSettings,
    *(CASES.get(name).settings_model for name in CASES.names()),
]
WRONG: dict[type, list[Any]] = {int: [True, 2.0, "2"], float: [False, "0.5"], bool: [1, 0, "true"]}
RIGHT: dict[type, Any] = {int: 2, float: 0.5, bool: True}
FIELDS = [
    pytest.param(model, name, kind, id=f"{model.__name__}.{name}")
    for model in MODELS
    for name, field in model.model_fields.items()
    if (kind := scalar_kind(field.annotation)) is not None
]


def _minimal(model: type[BaseModel]) -> dict[str, Any]:
    return {"case": "target-localization"} if model is RunConfig else {}


def test_the_models_have_scalar_fields_of_every_kind() -> None:
    assert {kind for _, _, kind in (p.values for p in FIELDS)} == {int, float, bool}
    assert len(FIELDS) >= 20


@pytest.mark.parametrize(("model", "name", "kind"), FIELDS)
def test_a_value_of_another_type_is_refused_naming_the_field(
    model: type[BaseModel], name: str, kind: type
) -> None:
    for value in WRONG[kind]:
        with pytest.raises(ValidationError) as caught:
            model.model_validate({**_minimal(model), name: value})
        assert [error["loc"] for error in caught.value.errors()] == [(name,)], value


@pytest.mark.parametrize(("model", "name", "kind"), FIELDS)
def test_a_value_of_its_type_is_not_refused_for_its_type(
    model: type[BaseModel], name: str, kind: type
) -> None:
    try:
        model.model_validate({**_minimal(model), name: RIGHT[kind]})
    except ValidationError as error:  # a bound may refuse the value, never its type
        assert all("is not" not in str(e["msg"]) for e in error.errors()), error


def test_an_int_is_a_number_for_a_float_setting() -> None:
    assert RunConfig.model_validate({"case": "target-localization", "r0": 2}).r0 == 2.0
