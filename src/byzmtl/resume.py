"""Long runs from the command line: a checkpointed run's folder, and ``byzmtl run --resume DIR``.

    byzmtl run target-localization --iterations 2000 --checkpoint-every 100 --out runs/long
    byzmtl run --resume runs/long      # after a crash, a kill -9 or Ctrl-C

:func:`start` makes a run with ``checkpoint_every`` an interrupted run from its first moment
(its folder holds config.toml and an empty ``checkpoint/``, no summary.json), so that a run killed
at any instant leaves a folder that says what it is. :func:`command_resume` continues such a run
from its last checkpoint in the same folder, under its stored configuration, and ends with the
tables, summary and figures of the uninterrupted run (timings aside: ``wall_seconds`` and
``compute_seconds``). Only flags that cannot change a number may accompany ``--resume``:
``--threads``, ``--plugin``, ``--no-progress`` and ``--quiet``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from byzmtl.checkpoints import (
    CONFIG,
    CheckpointError,
    CheckpointFolder,
    sync_folder,
    write_text_durably,
)
from byzmtl.config import RunConfig, parse, read_toml
from byzmtl.destination import Destination, claim
from byzmtl.inputs import fingerprints, named_paths
from byzmtl.results import (
    CHECKPOINT_FOLDER,
    INTERRUPTED,
    is_interrupted_run,
    is_run_folder,
    write_into,
)
from byzmtl.tasks import CASES

if TYPE_CHECKING:
    from byzmtl.engine.ranks import Ranks
    from byzmtl.experiment import Result

T = TypeVar("T")

HARMLESS = frozenset({"threads", "plugin", "no_progress", "quiet"})
_NOT_FLAGS = frozenset({"command", "handler", "resume", "argv"})  # argv: the command line itself


def start(
    destination: Destination, config: RunConfig, quiet: bool = False
) -> CheckpointFolder | None:
    """For a run with ``checkpoint_every`` (None without): put in place of the claimed
    destination a folder holding the resolved ``config`` as config.toml and an empty
    checkpoint folder, in one step (an interrupted run that an ``--overwrite`` replaces goes
    with it); return its checkpoint folder. A finished run there is refused (its folder would
    hold another run's checkpoints): one-line :class:`CheckpointError`, nothing written."""
    if config.checkpoint_every is None:
        return None
    target = destination.target
    if is_run_folder(target):
        raise CheckpointError(
            f"checkpoint_every: {destination.out} holds a finished run, and a run with "
            "checkpoints writes them into its folder as it goes: delete it or choose another --out"
        )
    staging = destination.staging()
    write_text_durably(staging / CONFIG, config.to_toml())
    (staging / CHECKPOINT_FOLDER).mkdir()
    destination.commit(staging)
    sync_folder(target.parent)
    if not quiet:
        unit = CASES.get(config.case).time_unit  # iteration, or epoch
        print(
            f"byzmtl: a checkpoint every {config.checkpoint_every} {unit}(s) in "
            f"{destination.out}/{CHECKPOINT_FOLDER}; if the run stops, continue it with: "
            f"byzmtl run --resume {destination.out}",
            file=sys.stderr,
        )
    return CheckpointFolder(target / CHECKPOINT_FOLDER, destination.out)


def _refuse_flags(args: argparse.Namespace) -> None:
    """Only flags that cannot change a result may accompany ``--resume``."""
    for name, value in vars(args).items():
        if name in HARMLESS or name in _NOT_FLAGS or value is None or value is False:
            continue
        if isinstance(value, list) and not value:
            continue
        flag = "case" if name == "case" else "--" + name.replace("_", "-")
        raise CheckpointError(
            f"resume: {flag} cannot be given with --resume; the run continues with the settings "
            f"of {args.resume}/{CONFIG} (only --threads, --plugin, --no-progress, --quiet)"
        )


def check_resumable(run_dir: Path) -> None:
    """One-line :class:`CheckpointError` unless ``run_dir`` holds an interrupted run with a
    checkpoint."""
    if not run_dir.is_dir():
        raise CheckpointError(f"resume: {run_dir} is not a folder")
    if is_run_folder(run_dir):
        raise CheckpointError(f"resume: {run_dir} holds a finished run; there is nothing to resume")
    if not is_interrupted_run(run_dir):
        raise CheckpointError(
            f"resume: {run_dir} holds no run with checkpoints "
            f"(no {CONFIG} beside a {CHECKPOINT_FOLDER}/ folder)"
        )
    if CheckpointFolder(run_dir / CHECKPOINT_FOLDER).manifest() is None:
        raise CheckpointError(
            f"resume: {run_dir} holds no checkpoint: the run stopped before its first one; "
            f"start it again with byzmtl run --config {run_dir}/{CONFIG} --out {run_dir} "
            "--overwrite"
        )


def _check_working_folder(config: dict[str, Any], manifest: dict[str, Any] | None) -> None:
    """A run whose settings name relative paths (data folders, graph files) continues only from
    the folder it started in: elsewhere they could name other data."""
    started = None if manifest is None else manifest.get("cwd")
    if not isinstance(started, str) or os.path.realpath(started) == os.path.realpath("."):
        return
    relative = [
        (name, value) for name, value in named_paths(config, started) if not os.path.isabs(value)
    ]
    if relative:
        setting, value = relative[0]
        raise CheckpointError(
            f"resume: {setting} = {value!r} is relative to {started}, where the run started; "
            "resume it from there"
        )


def _check_inputs(config: dict[str, Any], manifest: dict[str, Any] | None) -> None:
    """The files and folders the settings name are those the checkpointed run read (their
    fingerprints, :mod:`byzmtl.inputs`): a run continued on other data would be neither run."""
    recorded = None if manifest is None else manifest.get("inputs")
    if not isinstance(recorded, dict):  # a checkpoint of a byzmtl that did not record them
        return
    now = fingerprints(config, ".")
    for setting, print_ in recorded.items():
        if now.get(setting) != print_:
            where = "is gone" if setting not in now else "changed (a file's size or time)"
            raise CheckpointError(
                f"resume: {setting}: what it names {where} since the checkpoint; continue the "
                "run on the files it started with"
            )


def _use_threads(given: int | None, manifest: dict[str, Any] | None) -> None:
    """torch's CPU threads for the resumed run: ``given``, else the checkpointed run's. CPU
    reductions are split by thread count, so another count may change the last bits of what
    follows (said on stderr)."""
    import torch

    stored = None if manifest is None else manifest.get("threads")
    threads = given if given is not None else stored
    if threads is None:
        return
    torch.set_num_threads(int(threads))
    if stored is not None and int(threads) != int(stored):
        print(
            f"byzmtl: warning: the run was checkpointed with {stored} threads, it continues with "
            f"{threads}: its numbers may differ from the uninterrupted run's in the last bits",
            file=sys.stderr,
        )


def check_resume(
    args: argparse.Namespace, load_plugins: Callable[[Sequence[Path]], None]
) -> RunConfig:
    """What ``byzmtl run --resume DIR`` checks before it continues, in every process of the run:
    the flags, the plugins, the threads (those of the checkpointed run unless ``--threads``),
    the folder; returns the run's stored configuration."""
    run_dir: Path = args.resume
    _refuse_flags(args)
    load_plugins(args.plugin)
    if args.threads is not None and args.threads < 1:
        raise CheckpointError(f"threads: must be at least 1, got {args.threads}")
    check_resumable(run_dir)
    manifest = CheckpointFolder(run_dir / CHECKPOINT_FOLDER).manifest()
    stored = read_toml(run_dir / CONFIG)
    _check_working_folder(stored, manifest)
    _check_inputs(stored, manifest)
    _use_threads(args.threads, manifest)
    return parse(stored)


def continue_run(
    run_dir: Path, destination: Destination | None, ranks: Ranks | None, progress: bool
) -> Result:
    """Continue the interrupted run in ``run_dir`` from its last checkpoint to its end and write
    its results into ``destination`` (claimed for :data:`INTERRUPTED`). In a group of processes
    (``ranks``) every rank continues it; rank 0 alone holds the destination and writes the
    checkpoints and the results (the other ranks give None), every step agreed."""
    from byzmtl.engine.partition import PartitionedSimulation
    from byzmtl.experiment import prepare, run

    def agreed(step: Callable[[], T]) -> T:
        return step() if ranks is None else ranks.agree(step)

    first = ranks is None or ranks.rank == 0
    text = (run_dir / CONFIG).read_text()
    experiment = agreed(lambda: prepare(parse(read_toml(run_dir / CONFIG))))
    if experiment.config.to_toml() != text:  # the same on every rank
        raise CheckpointError(
            f"resume: {run_dir}/{CONFIG} does not resolve to itself; it was not written by "
            "this byzmtl"
        )
    out = destination.out if destination is not None else run_dir
    folder = CheckpointFolder(run_dir / CHECKPOINT_FOLDER, out)
    simulation = experiment.simulation
    where = (0, 1)  # a partitioned run's rank reads its own file
    if ranks is not None and isinstance(simulation, PartitionedSimulation):
        where = (ranks.rank, ranks.world)
    snapshot = agreed(lambda: folder.read(text, simulation.device, *where))
    # a checkpoint killed before its manifest goes, once every rank has read the last one
    agreed(lambda: folder.remove_unnamed(folder.manifest()) if first else None)
    checkpoints = folder if first else None
    result = run(experiment, progress=progress and first, checkpoints=checkpoints, resume=snapshot)
    if destination is not None:
        write_into(result, destination)
    return result


def command_resume(args: argparse.Namespace, summary_table: Callable[[dict[str, Any]], str]) -> int:
    """``byzmtl run --resume DIR`` of a run of one process (after :func:`check_resume`):
    continue the interrupted run in DIR to its end (with the command line's
    ``summary_table``)."""
    run_dir: Path = args.resume
    with claim(run_dir, False, INTERRUPTED) as destination:  # a live writer: refused at once
        check_resumable(run_dir)  # again: it may have finished before the claim
        result = continue_run(destination.target, destination, None, not args.no_progress)
    if not args.quiet:
        print(summary_table(result.summary))
        print(f"results: {destination.out}")
    return 0
