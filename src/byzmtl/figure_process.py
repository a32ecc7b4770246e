"""The figures of a run drawn by a second Python process, ``python -m byzmtl.plots.worker``
(:class:`FigureProcess`), so that importing matplotlib and pandas, a second or more, overlaps
the run's computation instead of following it. Standard library only at import (numpy where
used): the command line starts the process before it imports torch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from byzmtl.graph import Graph
    from byzmtl.graph_part import DrawnEdges


WORKER = (sys.executable, "-m", "byzmtl.plots.worker")
ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")  # figures need no more


class FigureProcess:
    """A second Python process that draws a run's figures (``python -m byzmtl.plots.worker``).

    Started when a run starts, it imports matplotlib and pandas while the run computes (on
    another core where there is one), then draws the figures of the folder it is given, as
    :func:`byzmtl.plots.draw_figures` does in this process. Whatever happens to it, the results
    folder is complete: where the process cannot be started or fails, :meth:`draw` returns
    None with :attr:`failure` saying why, and :mod:`byzmtl.results` draws the figures in its
    own process after a one-line warning. :meth:`draw_network` has it draw the network figure
    while the run computes. It runs in a session of its own (a Ctrl-C reaches this process
    only, which stops it), reads its requests from stdin and exits when stdin closes, so it
    never outlives this process for long.
    """

    def __init__(self, process: subprocess.Popen[str] | None, reason: str = "") -> None:
        self._process, self._reason = process, reason
        self._early: Path | None = None  # the folder of the network drawn early

    @classmethod
    def start(cls, command: Sequence[str] | None = None) -> FigureProcess:
        """Start the process (``command``: another program speaking the same protocol). By
        default none is started where this process has imported matplotlib already (the cost
        the process hides is paid): :meth:`draw` then returns None without a :attr:`failure`."""
        if command is None and "matplotlib.pyplot" in sys.modules:
            return cls(None)
        command = list(command or WORKER)
        try:
            process = subprocess.Popen(
                command,
                env={**os.environ, **dict.fromkeys(ONE_THREAD, "1")},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        except OSError as error:
            return cls(None, f"cannot start {command[0]}: {error}")
        return cls(process)

    def __enter__(self) -> FigureProcess:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the process if it is still running (a run that ended before its figures)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
        if process is not None:
            process.communicate()
        self._forget_early()

    def _forget_early(self) -> None:
        if self._early is not None:
            shutil.rmtree(self._early, ignore_errors=True)
            self._early = None

    def draw_network(
        self,
        graph: Graph | DrawnEdges,
        groups: Sequence[int] | np.ndarray,
        group_names: Sequence[str],
        byzantine: Sequence[int] | np.ndarray,
        title: str,
    ) -> None:
        """Have the process draw the network figure now, titled ``title``, while this process
        computes (in a temporary folder of its own); :meth:`draw` then puts it into the
        results folder, or draws it again where the folder's title differs. A process that
        cannot be asked fails as :meth:`draw` would."""
        if self._process is None or self._early is not None:
            return
        self._early = Path(tempfile.mkdtemp(prefix="byzmtl-network-"))
        inputs = self._early / "input.npz"
        save_network_input(inputs, graph, groups, group_names, byzantine)
        try:
            assert self._process.stdin is not None
            self._process.stdin.write(json.dumps({"network": str(inputs), "title": title}) + "\n")
            self._process.stdin.flush()
        except OSError as error:
            self._reason = f"cannot ask the figure process: {error}"
            self.close()

    @property
    def has_network(self) -> bool:
        """Whether the network figure was asked for already (:meth:`draw_network`)."""
        return self._early is not None

    def draw(self, folder: Path, band: str, network: Path | None) -> list[str] | None:
        """Draw the figures of ``folder`` (and write network.npz from ``network``, the input
        file of :func:`save_network_input`, or from :meth:`draw_network`'s); the one-line
        warnings of what was not drawn, or None (with :attr:`failure` set) when the process
        failed."""
        process, self._process = self._process, None
        if process is None:
            return None
        request = {"folder": str(folder), "band": band, "network": network and str(network)}
        try:
            out, err = process.communicate(json.dumps(request) + "\n")
        except BaseException:
            process.kill()
            process.communicate()
            raise
        finally:
            self._forget_early()
        try:
            answer = json.loads(out.strip().splitlines()[-1]) if out.strip() else None
            lines = answer["warnings"] if isinstance(answer, dict) else None
        except (ValueError, KeyError):
            lines = None
        if process.returncode == 0 and isinstance(lines, list):
            return [str(line) for line in lines]
        said = [line for line in err.strip().splitlines() if line.strip()]
        self._reason = said[-1].strip() if said else f"exit status {process.returncode}"
        return None

    @property
    def started(self) -> bool:
        """Whether the process runs and has not been asked yet."""
        return self._process is not None

    @property
    def failure(self) -> str:
        """Why the process did not draw the figures ("" when it did or was not asked)."""
        return self._reason


def save_network_input(
    path: Path,
    graph: Graph | DrawnEdges,
    groups: Sequence[int] | np.ndarray,
    group_names: Sequence[str],
    byzantine: Sequence[int] | np.ndarray,
) -> None:
    """What :func:`byzmtl.plots.save_network` needs, as arrays (numpy only): the figure process
    rebuilds the graph's edges from them and writes network.npz."""
    import numpy as np

    from byzmtl.graph_part import DrawnEdges

    arrays: dict[str, Any] = {
        "n_agents": np.asarray(graph.n_agents),
        "receivers": graph.receivers,
        "senders": graph.senders,
        "groups": np.asarray(groups),
        "group_names": np.asarray([str(name) for name in group_names], dtype=str),
        "byzantine": np.asarray(byzantine),
    }
    if graph.positions is not None:
        arrays["positions"] = np.asarray(graph.positions)
    if isinstance(graph, DrawnEdges):  # the edges among the drawn agents only
        arrays["n_links"] = np.asarray(graph.n_links)
        arrays["directed"] = np.asarray(graph.directed)
    with open(path, "wb") as file:
        np.savez(file, **arrays)
