"""The runnable examples in the docstrings of the rules and attacks stay true."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "byzmtl.rules.coordinatewise",
    "byzmtl.rules.krum",
    "byzmtl.rules.geometric_median",
    "byzmtl.rules.clipping",
    "byzmtl.rules.two_stage",
    "byzmtl.rules.hardened",
    "byzmtl.attacks.corrupted",
    "byzmtl.attacks.collusion",
    "byzmtl.attacks.adaptive",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
