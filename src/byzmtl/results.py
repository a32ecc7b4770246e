"""The results folder of a run, written so that a run never loses its result.

    config.toml    the resolved configuration (rerun it with ``byzmtl run --config``)
    metrics.csv    rule, group, <time>, <metric>_mean, <metric>_min, <metric>_max per record
    diagnostics.csv  rule, iteration, weight on Byzantine / own-task senders, regret (per round)
    summary.json   see the README's "Results format"; strict JSON (non-finite numbers are null,
                   and ``non_finite`` names each: ``{"rules.average.final.msd.mean": "inf"}``),
                   with ``warnings``: one line per figure that could not be drawn
    figure.png     per metric a panel: per rule a mean line and a min-max band
    diagnostics.png  the diagnostics over rounds (see byzmtl.recording.Diagnostics)
    network.png    agents coloured by task, Byzantine agents in red, edges drawn

Guarantees (the mechanism is :mod:`byzmtl.destination`):

- One writer per folder: the destination is claimed with a lock (the CLI claims it before the
  computation), so a second writer fails at once with a one-line error and deletes nothing.
  Default names never collide: a name taken by another run gets a suffix ``-2``, ``-3``, ...
- A reader never sees a partial run: the folder is assembled under a staging name beside its
  destination, tables first, then the figures, and put in place in one step at the end.
- A folder that cannot be written (a full disk, say) is a one-line error; the staging folder is
  removed and the destination left as it was.
- A figure that cannot be drawn (an attack that drove a metric to zero or infinity, say) is
  left out with a warning (:class:`FigureWarning`, recorded in summary.json); the tables stay.
- ``overwrite`` replaces only a byzmtl run (a folder with config.toml and a summary.json written
  by byzmtl), and only once the new run is complete: the two folders are exchanged atomically
  (Linux), then the old one is deleted. Elsewhere two renames leave a short window without the
  folder; a writer killed in it leaves the old run beside it, which the next claim puts back.
- A run with checkpoints (``checkpoint_every``) is a folder from its start: config.toml and
  ``checkpoint/`` (:mod:`byzmtl.checkpoints`), no summary.json until the finished run replaces
  the folder in one step (the checkpoint goes with it). Such an interrupted run is continued by
  ``byzmtl run --resume``; writing another run there needs ``overwrite``.
- A killed writer leaves no stuck lock; its staging folder is removed by the next claim of the
  same destination (or by any default-named run in the same folder).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from byzmtl.destination import Destination, DestinationError, Kind, check, claim
from byzmtl.figure_process import FigureProcess, save_network_input

if TYPE_CHECKING:
    from byzmtl.experiment import Result


class FigureWarning(UserWarning):
    """A figure could not be drawn and was left out; the results it shows are still written."""


def is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a byzmtl run: a config.toml and a summary.json that names the
    byzmtl version which wrote it."""
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    versions = summary.get("versions") if isinstance(summary, dict) else None
    written = isinstance(versions, dict) and "byzmtl" in versions
    return written and (folder / "config.toml").is_file()


CHECKPOINT_FOLDER = "checkpoint"


def is_interrupted_run(folder: Path) -> bool:
    """Whether ``folder`` holds a run interrupted before its end (see :mod:`byzmtl.checkpoints`):
    a config.toml and a checkpoint folder (with or without a checkpoint in it yet), and no
    summary.json."""
    return (
        (folder / CHECKPOINT_FOLDER).is_dir()
        and (folder / "config.toml").is_file()
        and not os.path.lexists(folder / "summary.json")
    )


RUN = Kind("a run", lambda folder: is_run_folder(folder) or is_interrupted_run(folder))
INTERRUPTED = Kind("an interrupted run", is_interrupted_run, resumable=True)


def check_destination(out: Path, overwrite: bool) -> None:
    """Refuse at once, writing nothing, a destination a run cannot be written to (see
    :func:`byzmtl.destination.check`); an interrupted run only with ``overwrite``."""
    if not overwrite and is_interrupted_run(Path(out)):
        raise DestinationError(
            f"out: {out} holds an interrupted run: continue it with byzmtl run --resume {out}, "
            "or replace it with --overwrite"
        )
    check(out, overwrite, RUN)


def write_results(result: Result, out: Path, overwrite: bool = False) -> Path:
    """Claim the folder ``out`` and write ``result`` into it (see the module docstring)."""
    with claim(Path(out), overwrite, RUN) as destination:
        return write_into(result, destination)


def write_into(
    result: Result, destination: Destination, figures: FigureProcess | None = None
) -> Path:
    """Write ``result`` into a destination claimed for a run (with :data:`RUN`); the figures
    in ``figures`` (a process started beforehand) where given, else in this process. A file
    that cannot be written (a full disk, say) is a one-line :class:`DestinationError`, and the
    staging folder goes: the destination is as it was."""
    staging = destination.staging()
    try:
        summary = _write_tables(result, staging)
        skipped = _draw_figures(result, staging, figures)
        if skipped:
            (staging / "summary.json").write_text(strict_json({**summary, "warnings": skipped}))
        destination.commit(staging)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        reason = error.strerror or str(error)
        raise DestinationError(f"out: cannot write {destination.out}: {reason}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination.out


def _write_tables(result: Result, folder: Path) -> dict[str, Any]:
    """config.toml, metrics.csv, diagnostics.csv and summary.json; returns the summary written."""
    (folder / "config.toml").write_text(result.config.to_toml())
    result.metrics_table.to_csv(folder / "metrics.csv")
    if result.diagnostics_table is not None:
        result.diagnostics_table.to_csv(folder / "diagnostics.csv")
    summary = {**result.summary, "warnings": [], "non_finite": non_finite(result.summary)}
    (folder / "summary.json").write_text(strict_json(summary))
    return summary


def _band(result: Result) -> str:
    percentiles = result.config.percentiles
    return f"p{percentiles[0]:g}-p{percentiles[-1]:g}" if len(percentiles) > 1 else "minmax"


def _draw_figures(result: Result, folder: Path, figures: FigureProcess | None = None) -> list[str]:
    """Draw figures: save what the figures need (network.npz) and draw every figure of the run
    from the folder's files (:func:`byzmtl.plots.draw_figures`, as ``byzmtl plot`` does), in
    the process ``figures`` where given; returns the one-line warnings of what could not be
    drawn, each also issued as a :class:`FigureWarning`."""
    if figures is not None and figures.started:
        inputs = folder / ".network-input.npz"  # removed before the folder is committed
        try:
            if not figures.has_network:
                experiment = result.experiment
                save_network_input(
                    inputs,
                    experiment.drawn,
                    experiment.groups,
                    experiment.case.group_names,
                    experiment.byzantine,
                )
            drawn = figures.draw(folder, _band(result), None if figures.has_network else inputs)
        finally:
            inputs.unlink(missing_ok=True)
        if drawn is not None:
            for line in drawn:
                warnings.warn(line, FigureWarning, stacklevel=2)
            return drawn
    if figures is not None and figures.failure:
        warnings.warn(
            f"figures: the figure process failed ({figures.failure}); drawing them here",
            FigureWarning,
            stacklevel=2,
        )
    from byzmtl import plots

    experiment, case = result.experiment, result.experiment.case
    lines = []
    network = draw_figure(
        folder / "network.npz",
        lambda path: plots.save_network(
            path, experiment.drawn, experiment.groups, case.group_names, experiment.byzantine
        ),
    )
    if network is not None:
        lines.append(network)
    for line in plots.draw_figures(folder, band=_band(result)):
        warnings.warn(line, FigureWarning, stacklevel=2)
        lines.append(line)
    return lines


def draw_figure(path: Path, draw: Callable[[Path], None], name: str = "") -> str | None:
    """Call ``draw(path)``; where it raises, remove what it left at ``path``, warn
    (:class:`FigureWarning`) and return the one-line warning ``NAME: not drawn (Error: ...)``,
    naming the figure ``name`` (by default the name of ``path``), instead of raising."""
    from byzmtl.plots import failure_reason

    try:
        draw(path)
    except Exception as error:
        path.unlink(missing_ok=True)
        line = f"{name or path.name}: not drawn ({failure_reason(error)})"
        warnings.warn(line, FigureWarning, stacklevel=2)
        return line
    return None


def strict_json(value: Any, indent: int = 2) -> str:
    """``value`` as strict JSON (RFC 8259 has no NaN or Infinity): non-finite floats become
    null. Ends with a newline."""
    return json.dumps(_finite(value), indent=indent, allow_nan=False) + "\n"


def non_finite(value: Any, path: str = "") -> dict[str, str]:
    """Where ``value`` holds non-finite floats (which :func:`strict_json` writes as null): their
    dotted paths (list items by index) and what they were, "inf", "-inf" or "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return {path: str(value)}
    found: dict[str, str] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            found.update(non_finite(item, f"{path}.{key}" if path else str(key)))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found.update(non_finite(item, f"{path}.{index}" if path else str(index)))
    return found


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
