"""How many threads torch uses for a run, by default: one for small problems, else one per idle
core; ``--threads N`` (``requested``) and ``OMP_NUM_THREADS`` always win.

Why (``python benchmarks/thread_threshold.py``, raw results in
``benchmarks/results/thread_threshold.json``, table in ``benchmarks/RESULTS.md``): torch's
default, one thread per core, splits every tensor operation of a round between threads. On the
paper's experiment (100 agents x 2 parameters) the operations are tiny: the threads only cost
their hand-offs, and when another process keeps a core busy, every hand-off waits for a thread
that is not running (18.3 s of compute with the default against 1.16 s with one thread, in the
issue that introduced this module). Measured on this project's 2-core machine on 2026-12-02
(shared, load average 5 to 9), one thread against two, alone and beside a process spinning on
a core: two threads were 5.8x to 17x slower for target localization from 200 to 200,000 agents
x parameters, and 21x slower for HAR (101,160) alone; with both cores idle two threads won only
at a million agents (2e6: 0.38 s per round against 0.49 s, 2026-11-28). Hence
:data:`SMALL_PROBLEM` = 1e6, and above it no more threads than idle cores. The policy:

    threads = requested                          if --threads N is given
            = (torch's, from OMP_NUM_THREADS)    if OMP_NUM_THREADS is set
            = 1                                  if agents x parameters < SMALL_PROBLEM
            = idle cores                         otherwise,

    idle cores = clip(cores - round(1-minute load average) + 1, 1, cores),

the cores this process may use (its affinity) minus those other processes keep busy; the ``+ 1``
counts the core this process itself runs on, which the load average includes once it has run
for a while.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

SMALL_PROBLEM = 1_000_000  # agents x parameters below which one thread is fastest (measured)


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def idle_cores(cores: int | None = None, load: float | None = None) -> int:
    """``cores`` (default: :func:`available_cores`) minus those the 1-minute ``load`` average
    (default: the system's) keeps busy, counting this process's own core as idle; at least 1."""
    cores = available_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # pragma: no cover - no load average on this system
            load = 0.0
    if not math.isfinite(load):
        load = float(cores)
    return max(1, min(cores, cores - round(load) + 1))


def default_threads(problem_size: int, cores: int | None = None, load: float | None = None) -> int:
    """The policy's thread count for a problem of ``problem_size`` = agents x parameters."""
    if problem_size < SMALL_PROBLEM:
        return 1
    return idle_cores(cores, load)


def chosen_threads(
    requested: int | None,
    problem_size: int,
    environ: Mapping[str, str] = os.environ,
    cores: int | None = None,
    load: float | None = None,
) -> int | None:
    """The threads to set: ``requested`` if given; None (leave torch's own choice, which
    follows the variable) when ``OMP_NUM_THREADS`` is set; else :func:`default_threads`."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads: must be at least 1, got {requested}")
        return requested
    if environ.get("OMP_NUM_THREADS", "").strip():
        return None
    return default_threads(problem_size, cores, load)


def problem_size(simulation: Any) -> int:
    """agents x parameters of a :class:`~byzmtl.engine.Simulation` (its task's model size)."""
    task = simulation.task
    parameters = getattr(task, "n_parameters", None)
    if parameters is None:
        parameters = int(task.init_models(1).shape[-1])
    return int(simulation.graph.n_agents) * int(parameters)  # the whole network's, on every rank


def apply(requested: int | None, size: int) -> int:
    """Set torch's intra-op threads by :func:`chosen_threads`; returns the count in force."""
    import torch

    threads = chosen_threads(requested, size)
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
