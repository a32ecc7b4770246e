"""Whether a run fits this machine: its memory and its time, estimated before anything runs.

A run that cannot fit fails at once with a one-line :class:`ResourceError` naming the setting
that makes it too large, instead of a MemoryError after minutes or a process that runs for years:

    task.agents: this run needs about 4.6e+05 GiB of memory, this machine has 22 GiB available
    task.iterations: this run would take at least 6.49 years (1e+13 rounds of at least 20.5 us)

Memory. A run of N agents, E edges (self-loops included), d parameters per model, R rules
(replicas), T rounds and K records holds, in bytes (s: the size of a number of the run's dtype)

    models    6 R N d s          state, local steps, combination, their copies within a round
    edges     (16 R s + 16) E    losses, scores, weights, masks, attack messages and
                                 diagnostics per replica; the edge lists
    agents    50 N               identities, positions, noise levels, groups, ...
    records   8 R (S Q K + 4 T)  per record and subset S: Q statistics of every metric; per
                                 round four diagnostics

and must fit in the memory available. On an accelerator that is its free memory
(``torch.cuda.mem_get_info``); on the CPU ``MemAvailable`` of ``/proc/meminfo``, capped by the
limit of the process's cgroup (v2 ``memory.max`` less ``memory.current`` up the hierarchy, or
v1 ``memory.limit_in_bytes`` less ``memory.usage_in_bytes``). Where neither can be read (not
Linux) memory is not checked. The constants are fitted to peaks measured on target
localization (peak resident memory above the imported process, 2026-12-02, after the geometric
graph was built in blocks): 1e6 agents, 1e7 edges, 1 rule, no attackers: 0.91 GB measured
(``byzmtl bench``: 141 B per agent and 77 B per edge), 1.59 GB estimated; 1e5 agents, 1e6 edges,
the paper's 4 rules, 20 attackers, the whole run: 0.58 GB measured, 0.57 estimated. So it errs
high for one rule without attackers (by up to 2x) rather than low for several with them. Rules
that pad neighbourhoods (krum, median...) take more. It leaves out a learning
case study's data and the messages gathered shard by shard (bounded by the shard size).

Time. Every round costs at least ``ROUND_SECONDS`` = 20 us, the engine's fixed work: the
smallest run (one agent, one rule) issues 44 tensor operations a round, each at least half a
microsecond of dispatch on any device (measured: 180 us a round for it on a loaded 2-core
machine, 170 us for the paper's four rules on a quiet one), plus ``ELEMENT_SECONDS`` per value
touched, R (E + N d) per round. A run whose lower bound exceeds ``MAX_SECONDS`` (a week) is
refused.

Both checks run twice in :func:`byzmtl.experiment.prepare`: on the size the settings plan
(:meth:`~byzmtl.tasks.CaseStudy.planned_size`, before the case study and the graph are built,
which is where a huge network would run out of memory), and on the built experiment.
``BYZMTL_NO_RESOURCE_CHECK=1`` in the environment turns both off.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from byzmtl.config import ConfigError, GraphSettings

BYPASS = "BYZMTL_NO_RESOURCE_CHECK"
ROUND_SECONDS = 20e-6
ELEMENT_SECONDS = {"cpu": 1e-10}  # per value touched; other devices: DEFAULT_ELEMENT_SECONDS
DEFAULT_ELEMENT_SECONDS = 1e-12
MAX_SECONDS = 7 * 86400.0
GIB = 1024**3
REPLICA_EDGE_NUMBERS = 16.0  # numbers of the run's dtype per edge and replica
EDGE_BYTES = 16.0  # per edge besides the replicas' (module docstring)
AGENT_BYTES = 50.0  # per agent besides the models (module docstring)
_UNLIMITED = 1 << 60  # cgroup limits at or above this mean "no limit"


class ResourceError(ConfigError):
    """A run too large for this machine; the message names the setting."""


@dataclass(frozen=True)
class Size:
    """The dimensions of a run that decide its memory and time."""

    agents: int  # N
    edges: int  # E, self-loops included
    parameters: int  # d, per model
    replicas: int  # R, one per rule
    rounds: int  # T
    records: int  # K, records of the metrics table
    metrics: int = 2  # metrics recorded per agent
    subsets: int = 1  # "all" and each task group
    statistics: int = 3  # mean, min, max and the percentiles asked for
    itemsize: int = 8  # bytes per number of the run's dtype
    device: str = "cpu"  # the torch device, e.g. cpu or cuda:0


def bytes_needed(size: Size) -> dict[str, float]:
    """The bytes of each part of a run (module docstring): ``agents`` (everything that grows
    with the network) and ``records`` (everything that grows with the rounds)."""
    r, s = size.replicas, size.itemsize
    network = (
        6.0 * r * size.agents * size.parameters * s
        + (REPLICA_EDGE_NUMBERS * r * s + EDGE_BYTES) * size.edges
        + AGENT_BYTES * size.agents
    )
    per_record = size.subsets * size.statistics * size.metrics
    records = 8.0 * r * (per_record * size.records + 4.0 * size.rounds) + 8.0 * size.rounds
    return {"agents": network, "records": records}


def seconds_needed(size: Size) -> float:
    """A lower bound on the run's compute seconds (module docstring)."""
    element = ELEMENT_SECONDS.get(size.device.partition(":")[0], DEFAULT_ELEMENT_SECONDS)
    touched = size.replicas * (size.edges + size.agents * size.parameters)
    return size.rounds * (ROUND_SECONDS + element * touched)


def device_bytes(device: str) -> float | None:
    """The memory free on ``device``: :func:`available_bytes` for the CPU, the free memory of a
    CUDA device; None where it cannot be told."""
    if device.partition(":")[0] == "cpu":
        return available_bytes()
    if device.startswith("cuda"):
        import torch

        try:
            free, _ = torch.cuda.mem_get_info(torch.device(device))
        except (RuntimeError, AssertionError, ValueError):
            return None
        return float(free)
    return None


def available_bytes(root: Path = Path("/")) -> float | None:
    """The memory this process may still take: MemAvailable capped by its cgroup's limit;
    None where it cannot be read. ``root``: where ``proc`` and ``sys`` are (for tests)."""
    free = _meminfo_available(root / "proc" / "meminfo")
    limit = _cgroup_room(root)
    known = [value for value in (free, limit) if value is not None]
    return min(known) if known else None


def _meminfo_available(path: Path) -> float | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "MemAvailable":
            number, *unit = value.split()
            return float(number) * (1024 if unit == ["kB"] else 1)
    return None


def _read_number(path: Path) -> float | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return math.inf
    try:
        return float(text)
    except ValueError:
        return None


def _cgroup_room(root: Path) -> float | None:
    """Limit less usage of the tightest memory cgroup of this process, or None."""
    try:
        lines = (root / "proc" / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, relative = parts
        if controllers == "":  # cgroup v2: limits anywhere up the hierarchy apply
            folder = root / "sys" / "fs" / "cgroup" / relative.lstrip("/")
            base = root / "sys" / "fs" / "cgroup"
            while True:
                limit = _read_number(folder / "memory.max")
                used = _read_number(folder / "memory.current")
                if limit is not None and used is not None and limit < _UNLIMITED:
                    rooms.append(max(0.0, limit - used))
                if folder == base or base not in folder.parents:
                    break
                folder = folder.parent
        elif "memory" in controllers.split(","):  # cgroup v1
            folder = root / "sys" / "fs" / "cgroup" / "memory"
            for where in (folder / relative.lstrip("/"), folder):
                limit = _read_number(where / "memory.limit_in_bytes")
                used = _read_number(where / "memory.usage_in_bytes")
                if limit is not None and used is not None and limit < _UNLIMITED:
                    rooms.append(max(0.0, limit - used))
    return min(rooms) if rooms else None


def duration(seconds: float) -> str:
    """``seconds`` in the largest unit that keeps it above one: 15.9 years, 3.2 days, ..."""
    for unit, length in (("years", 365.25 * 86400), ("days", 86400.0), ("hours", 3600.0)):
        if seconds >= length:
            return f"{seconds / length:#.3g} {unit}"
    return f"{seconds:#.3g} seconds"


def check(
    size: Size,
    fields: Mapping[str, str],
    available: Callable[[], float | None] | None = None,
    environment: Mapping[str, str] | None = None,
) -> None:
    """Raise a one-line :class:`ResourceError` where the run of ``size`` would take more than
    a week or more memory than is available. ``fields`` name the settings to blame:
    ``agents`` (the network) and ``rounds``. ``BYZMTL_NO_RESOURCE_CHECK=1`` in ``environment``
    (default ``os.environ``) skips the checks."""
    environment = os.environ if environment is None else environment
    if environment.get(BYPASS, "") not in ("", "0"):
        return
    bypass = f"({BYPASS}=1 runs it anyway)"
    seconds = seconds_needed(size)
    if seconds > MAX_SECONDS:
        raise ResourceError(
            f"{fields['rounds']}: this run would take at least {duration(seconds)} "
            f"({size.rounds:.3g} rounds of at least {seconds / size.rounds * 1e6:.3g} us); "
            f"runs over a week are refused {bypass}"
        )
    parts = bytes_needed(size)
    needed = sum(parts.values())
    free = device_bytes(size.device) if available is None else available()
    if free is not None and needed > free:
        blamed = fields["agents"] if parts["agents"] >= parts["records"] else fields["rounds"]
        where = "this machine has" if size.device == "cpu" else f"{size.device} has"
        raise ResourceError(
            f"{blamed}: this run needs about {needed / GIB:.2g} GiB of memory, {where} "
            f"{free / GIB:.2g} GiB available {bypass}"
        )


def planned_edges(graph: GraphSettings, agents: int) -> int:
    """The edges (self-loops included) a graph of these settings will have on ``agents``
    agents, known before it is built (a lower bound for graphs read from files or drawn at
    random without a cap)."""
    n = agents
    if graph.kind == "complete":
        return n * n
    if graph.kind == "ring":
        return n * min(2 * graph.hops + 1, n)
    if graph.kind == "k-regular":
        return n * (min(graph.k, n - 1) + 1)
    if graph.kind == "erdos-renyi":
        return n + round(graph.p * n * (n - 1))
    if graph.kind == "geometric" and graph.max_neighbours is not None:
        return n * graph.max_neighbours
    return n
