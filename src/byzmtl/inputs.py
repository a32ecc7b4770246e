"""The files a run's settings name (data folders, graph files, group files), and fingerprints
that tell whether they changed: what a checkpoint records so that a run is never continued on
other data than it started with.

A setting names a file when it is a string of the ``[task]`` or ``[graph]`` table that is the
path of an existing file or folder (relative paths read against the working folder). Its
fingerprint is the SHA-256 of every file's (path within it, size, modification time in ns), the
files of a folder taken in sorted order: editing, replacing or adding a file changes it, reading
none of the data (cheap for datasets of any size).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TABLES = ("task", "graph")


def named_paths(config: Mapping[str, Any], base: str) -> list[tuple[str, str]]:
    """(setting, value) of every string setting of ``config``'s task and graph tables that
    names an existing file or folder (relative values: relative to ``base``)."""
    found: list[tuple[str, str]] = []

    def visit(value: Any, name: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                visit(item, f"{name}.{key}")
        elif isinstance(value, str) and value and os.path.exists(os.path.join(base, value)):
            found.append((name, value))

    for table in TABLES:
        visit(config.get(table, {}), table)
    return found


def fingerprint(path: Path) -> str:
    """SHA-256 of (relative path, size, mtime_ns) of ``path`` or of every file under it."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        name = file.relative_to(path).as_posix() if file != path else ""
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def fingerprints(config: Mapping[str, Any], base: str) -> dict[str, str]:
    """{setting: fingerprint} of every file or folder the settings of ``config`` name."""
    return {name: fingerprint(Path(base, value)) for name, value in named_paths(config, base)}
