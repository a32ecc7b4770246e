"""The results folder of a run, written atomically.

    config.toml    the resolved configuration (rerun it with ``byzmtl run --config``)
    metrics.csv    rule, group, <time>, <metric>_mean, <metric>_min, <metric>_max per record
    summary.json   see the README's "Results format"
    diagnostics.csv  rule, iteration, weight on Byzantine / own-task senders, regret (per round)
    figure.png     per metric a panel: per rule a mean line and a min-max band
    diagnostics.png  the diagnostics over rounds (see byzmtl.recording.Diagnostics)
    network.png    agents coloured by task, Byzantine agents in red, edges drawn

The folder is assembled under a temporary name beside its destination and renamed into place at
the end, so a reader never sees a half-written run and a failed run leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from byzmtl.config import ConfigError

if TYPE_CHECKING:
    from byzmtl.experiment import Result

RUN_MARKER = "summary.json"


def check_destination(out: Path, overwrite: bool) -> None:
    """Refuse a folder that already holds a run (unless ``overwrite``) or that is not a folder."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out: {out} exists and is not a folder")
    if out.is_dir() and not overwrite and any(out.iterdir()):
        held = "a run" if (out / RUN_MARKER).exists() else "files"
        raise ConfigError(f"out: {out} already holds {held} (use --overwrite to replace it)")


def write_results(result: Result, out: Path, overwrite: bool = False) -> Path:
    """Write ``result`` into the folder ``out`` (see the module docstring)."""
    from byzmtl import plots

    check_destination(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (staging / "config.toml").write_text(result.config.to_toml())
        result.metrics.to_csv(staging / "metrics.csv", index=False)
        (staging / "summary.json").write_text(json.dumps(result.summary, indent=2) + "\n")
        experiment = result.experiment
        if result.diagnostics is not None:
            result.diagnostics.to_csv(staging / "diagnostics.csv", index=False)
        case, warnings = experiment.case, []
        try:  # a run never fails in drawing: what cannot be drawn becomes a warning
            plots.save_network(
                staging / "network.npz",
                experiment.graph,
                case.groups,
                case.group_names,
                experiment.byzantine,
            )
        except Exception as error:
            warnings.append(f"network.npz: not written ({type(error).__name__}: {error})")
        warnings += plots.draw_figures(staging)
        summary = dict(result.summary, warnings=[*result.summary.get("warnings", []), *warnings])
        (staging / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        _swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _swap_into_place(staging: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out)


def write_atomic(path: Path, text: str) -> None:
    """Write a text file via a temporary file and a rename (with the permissions a plain write
    would give it: mkstemp creates files readable by their owner only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(handle, 0o666 & ~umask)
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
