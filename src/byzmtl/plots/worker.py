"""The figure process of ``byzmtl run`` (:class:`byzmtl.results.FigureProcess`):
``python -m byzmtl.plots.worker``.

It imports matplotlib and pandas at once (so that the import overlaps the run's computation in
the parent process), then reads one request, a JSON line on stdin,

    {"folder": FOLDER, "band": "minmax" | "pXX-pYY", "network": INPUT.npz | null}

writes ``FOLDER/network.npz`` from the input arrays (see
:func:`byzmtl.results.save_network_input`), draws every figure of ``FOLDER``
(:func:`byzmtl.plots.draw_figures`) and answers one JSON line on stdout,
``{"warnings": [one line per figure not drawn]}``, exit status 0. stdin closed without a
request: exit 0 at once. It never imports torch.
"""

from __future__ import annotations

import gc
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np


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
        edges = _Edges(
            int(fields["n_agents"]),
            fields["receivers"],
            fields["senders"],
            fields.get("positions"),
        )
        names = [str(name) for name in fields["group_names"]]
        save_network(path, edges, fields["groups"], names, fields["byzantine"])  # type: ignore[arg-type]
    except Exception as error:
        path.unlink(missing_ok=True)
        return f"{path.name}: not drawn ({failure_reason(error)})"
    return None


def main() -> int:
    gc.disable()  # imports only: nothing to collect
    import matplotlib.pyplot as plt

    from byzmtl import plots

    figure = plt.figure()  # loads the fonts now, still overlapping the parent's computation
    figure.text(0.5, 0.5, "0.1")
    figure.canvas.draw()
    plt.close(figure)
    gc.enable()
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    request = json.loads(line)
    folder = Path(request["folder"])
    lines: list[str] = []
    if request.get("network"):
        skipped = _save_network(Path(request["network"]), folder / "network.npz")
        if skipped is not None:
            lines.append(skipped)
    lines += plots.draw_figures(folder, band=str(request.get("band") or "minmax"))
    print(json.dumps({"warnings": lines}), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # pragma: no cover - the parent stops it with SIGKILL
        sys.exit(130)
