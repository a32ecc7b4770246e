"""byzmtl: Byzantine-resilient decentralised multi-task learning.

The Python API (``byzmtl.run``, ``byzmtl.prepare``, ``byzmtl.RunConfig``...) is imported on first
use, so that importing a light module of the package (``byzmtl.cli`` for ``byzmtl --help``, say)
does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from byzmtl.version import __version__

if TYPE_CHECKING:
    from byzmtl.config import ConfigError, RunConfig
    from byzmtl.experiment import Result, prepare, run

_HOMES = {
    "ConfigError": "byzmtl.config",
    "RunConfig": "byzmtl.config",
    "Result": "byzmtl.experiment",
    "prepare": "byzmtl.experiment",
    "run": "byzmtl.experiment",
}

__all__ = ["ConfigError", "Result", "RunConfig", "__version__", "prepare", "run"]


def __getattr__(name: str) -> Any:
    """The API's names, imported from their modules on first use (PEP 562)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'byzmtl' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
