"""Plug-in files: Python files a user imports first (``byzmtl run --plugin FILE.py``) that register
their own rules, attacks or case studies.

A file that cannot be imported is a one-line :class:`PluginError` (exit status 2 on the command
line), never a traceback:

    plugin: my_rules.py: no such file
    plugin: my_rules.py, line 12: SyntaxError: invalid syntax
    plugin: my_rules.py, line 30: RegistryError: rule 'loss' is already registered

The line is where the error arose in the file itself (the innermost frame of the file in the
traceback; the line of its import when the error arose in a module it imports).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType, TracebackType

from byzmtl.config import ConfigError

PREFIX = "byzmtl_plugin_"


class PluginError(ConfigError):
    """A plug-in file that cannot be imported; the message starts with ``plugin:``."""


def load(paths: Iterable[str | Path]) -> list[ModuleType]:
    """Import every file of ``paths``, in order; the modules imported."""
    return [load_one(Path(path)) for path in paths]


def load_one(path: Path) -> ModuleType:
    """Import the Python file ``path`` as the module ``byzmtl_plugin_<stem>``; raise a one-line
    :class:`PluginError` naming the file (and the line) where it cannot be imported."""
    if not path.is_file():
        problem = "is a folder, not a Python file" if path.is_dir() else "no such file"
        raise PluginError(f"plugin: {path}: {problem}")
    name = f"{PREFIX}{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin: {path}: cannot be imported (not a Python source file)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while being built
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:  # IndentationError and undecodable source too
        sys.modules.pop(name, None)
        where = f", line {error.lineno}" if error.lineno else ""
        raise PluginError(
            f"plugin: {path}{where}: {type(error).__name__}: {_one_line(error.msg)}"
        ) from None
    except Exception as error:
        sys.modules.pop(name, None)
        line = line_in(path, error.__traceback__)
        where = f", line {line}" if line is not None else ""
        raise PluginError(
            f"plugin: {path}{where}: {type(error).__name__}: {_one_line(str(error))}"
        ) from None
    return module


def line_in(path: Path, trace: TracebackType | None) -> int | None:
    """The line of ``path`` in the innermost frame of ``trace`` that runs that file, if any."""
    target = _real(path)
    line = None
    while trace is not None:
        if _real(Path(trace.tb_frame.f_code.co_filename)) == target:
            line = trace.tb_lineno
        trace = trace.tb_next
    return line


def _real(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:  # pragma: no cover - a path that cannot be resolved
        return path


def _one_line(text: str) -> str:
    """``text`` on one line (an empty message says so)."""
    return " ".join(text.split()) or "(no message)"
