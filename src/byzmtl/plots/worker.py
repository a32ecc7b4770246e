"""The figure process of ``byzmtl run`` (:class:`byzmtl.figure_process.FigureProcess`):
``python -m byzmtl.plots.worker``.

It imports matplotlib and pandas at once (so that the import overlaps the run's computation in
the parent process), then reads requests, JSON lines on stdin:

    {"network": INPUT.npz, "title": TITLE}                        (optional, first)
    {"folder": FOLDER, "band": "minmax" | "pXX-pYY", "network": INPUT.npz | null}

The first, sent as soon as the graph is built, draws the network figure while the parent still
computes, in INPUT's folder (network.npz and network.png beside it). The second writes
``FOLDER/network.npz`` from the input arrays (see :func:`byzmtl.figure_process.save_network_input`)
or from the first request's, draws every figure of ``FOLDER`` as
:func:`byzmtl.plots.draw_figures` does (network.png is the early one when its title is the
folder's; it is drawn again otherwise), and answers one JSON line on stdout,
``{"warnings": [one line per figure not drawn]}``, and exits at once, status 0. On Linux
the figures are drawn by two processes at once (this one and a fork of it, which inherits the
imports); a fork that fails leaves its figures to this process. stdin closed without a final
request: exit 0. It never imports torch.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from byzmtl.graph_part import DrawnEdges


@dataclass(frozen=True)
class _Edges:
    """The part of a :class:`byzmtl.graph.Graph` that :func:`byzmtl.plots.network_of` reads."""

    n_agents: int
    receivers: np.ndarray
    senders: np.ndarray
    positions: np.ndarray | None


def _save_network(source: Path, path: Path) -> str | None:
    """network.npz from the input arrays; the one-line warning where it cannot be written."""
    from byzmtl.plots import failure_reason, save_network

    try:
        with np.load(source, allow_pickle=False) as data:
            fields = {name: data[name] for name in data.files}
        edges: _Edges | DrawnEdges = _Edges(
            int(fields["n_agents"]),
            fields["receivers"],
            fields["senders"],
            fields.get("positions"),
        )
        if "n_links" in fields:  # a partitioned run's edges among the drawn agents
            edges = DrawnEdges(
                edges.n_agents,
                edges.receivers,
                edges.senders,
                edges.positions,
                int(fields["n_links"]),
                bool(fields["directed"]),
            )
        names = [str(name) for name in fields["group_names"]]
        save_network(path, edges, fields["groups"], names, fields["byzantine"])  # type: ignore[arg-type]
    except Exception as error:
        path.unlink(missing_ok=True)
        return f"{path.name}: not drawn ({failure_reason(error)})"
    return None


@dataclass(frozen=True)
class _Early:
    """The network figure drawn before the run ended: in ``folder`` (network.npz, network.png)
    with ``title``; ``warning`` where network.npz could not be written."""

    folder: Path
    title: str
    warning: str | None


def _draw_early(source: Path, title: str) -> _Early:
    from byzmtl.plots import load_network, network_figure, save_figure

    folder = source.parent
    warning = _save_network(source, folder / "network.npz")
    if warning is None:
        try:
            network = load_network(folder / "network.npz")
            save_figure(network_figure(network, title), folder / "network")
        except Exception:  # drawn again from the results folder, which reports why
            (folder / "network.png").unlink(missing_ok=True)
    return _Early(folder, title, warning)


def _folder_title(folder: Path) -> str | None:
    """The title :func:`byzmtl.plots.draw_figures` gives the folder's figures (None: no
    readable summary)."""
    from byzmtl.plots import run_title

    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return run_title(summary) if isinstance(summary, dict) else None


def _draw(folder: Path, band: str, names: Sequence[str]) -> list[str]:
    from byzmtl import plots

    return plots.draw_figures(folder, band=band, names=names) if names else []


def _in_two(folder: Path, band: str, mine: Sequence[str], theirs: Sequence[str]) -> list[str]:
    """Draw ``mine`` here and ``theirs`` in a fork at the same time (Linux; elsewhere one
    after the other); the warnings of both, in order, each once."""
    if not theirs or sys.platform != "linux":
        return _draw(folder, band, [*mine, *theirs])
    read, write = os.pipe()
    try:
        pid = os.fork()
    except OSError:  # no process to spare: one after the other
        os.close(read)
        os.close(write)
        return _draw(folder, band, [*mine, *theirs])
    if pid == 0:  # the fork: draw, answer through the pipe, leave without any clean-up
        try:
            os.close(read)
            os.write(write, json.dumps(_draw(folder, band, theirs)).encode())
        finally:
            os._exit(0)
    os.close(write)
    lines = _draw(folder, band, mine)
    with os.fdopen(read, "rb") as answer:
        said = answer.read()
    _, status = os.waitpid(pid, 0)
    try:
        others = json.loads(said) if status == 0 else None
    except ValueError:
        others = None
    if not isinstance(others, list):
        others = _draw(folder, band, theirs)
    return list(dict.fromkeys([*lines, *(str(line) for line in others)]))


def _draw_folder(request: dict, early: _Early | None) -> list[str]:
    """The final request: every figure of the folder (see the module docstring)."""
    folder, band = Path(request["folder"]), str(request.get("band") or "minmax")
    lines: list[str] = []
    network_drawn = False
    if request.get("network"):
        skipped = _save_network(Path(request["network"]), folder / "network.npz")
        lines += [skipped] if skipped is not None else []
    elif early is not None:
        lines += [early.warning] if early.warning is not None else []
        if (early.folder / "network.npz").exists():
            shutil.move(early.folder / "network.npz", folder / "network.npz")
        if (early.folder / "network.png").exists() and _folder_title(folder) == early.title:
            shutil.move(early.folder / "network.png", folder / "network.png")
            network_drawn = True
    mine = ["figure"] if network_drawn else ["figure", "network"]
    return lines + _in_two(folder, band, mine, ["diagnostics"])


def main() -> int:
    gc.disable()  # imports only: nothing to collect
    import matplotlib.pyplot as plt

    from byzmtl import plots

    figure = plt.figure()  # loads the fonts now, still overlapping the parent's computation
    figure.text(0.5, 0.5, "0.1")
    figure.canvas.draw()
    plt.close(figure)
    gc.enable()
    del plots
    early: _Early | None = None
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        if "folder" not in request:
            early = _draw_early(Path(request["network"]), str(request.get("title") or ""))
            continue
        print(json.dumps({"warnings": _draw_folder(request, early)}), flush=True)
        os._exit(0)  # done: the files are closed, and freeing matplotlib's objects takes long
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # pragma: no cover - the parent stops it with SIGKILL
        sys.exit(130)
