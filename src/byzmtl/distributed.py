"""``byzmtl run`` on several processes: ``--procs P`` on one machine, torchrun across machines.

    byzmtl run target-localization --agents 100000 --procs 4 --out runs/big
    torchrun --nnodes 2 --nproc-per-node 4 --node-rank K --master-addr HOST --master-port PORT \
        -m byzmtl run target-localization --agents 100000 --out runs/big

``--procs P`` (or the setting ``procs``) starts P local processes running the same command, in a
torch.distributed group over a free localhost port; a process that finds the group's variables
in its environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, as torchrun and
the launcher here set them) joins that group instead. The backend is gloo (see :func:`join`;
on a CUDA device each rank computes on GPU ``LOCAL_RANK`` modulo the GPUs it sees).

What the ranks do and exchange each round is in :mod:`byzmtl.engine.ranks`: every rank holds the
whole state, weighs and combines its range of the engine's shards, and all ranks gather the
shards' results in rank order, so every rank ends each round with the one-process round, bit
for bit. Only rank 0 shows progress, claims the results folder and writes it, checkpoints
included (``--checkpoint-every``; each write agreed); the other ranks write nothing.
``byzmtl run --resume DIR`` of such a run (:func:`command_resume`) starts as many ranks as the
run had, and every rank continues from the one checkpoint.

Errors: the setup (building every piece of the run, claiming the folder) and every round are
agreed over the ranks (:meth:`~byzmtl.engine.ranks.Ranks.agree`): when one rank fails, rank 0
reports the first failing rank's error as the one-process run would (one line, exit status 2
for a user error) and every rank stops with that status. A rank waits at most ``BYZMTL_TIMEOUT``
seconds (default 600) for its peers; the local launcher stops every rank once one has stopped
with an error.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from byzmtl.config import ConfigError, RunConfig

if TYPE_CHECKING:
    from byzmtl.destination import Destination
    from byzmtl.engine.ranks import Ranks
    from byzmtl.experiment import Result

T = TypeVar("T")

GROUP_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
TIMEOUT_VARIABLE = "BYZMTL_TIMEOUT"
DEFAULT_TIMEOUT = 600.0  # seconds a rank waits for its peers in one exchange
GRACE = 10.0  # seconds the launcher lets the other ranks stop on their own after one failed


@dataclass(frozen=True)
class Place:
    """This process's place in a group, from its environment."""

    rank: int
    world: int
    local_rank: int


def environment() -> Place | None:
    """The group this process was started in (torchrun's or the launcher's variables), or None
    when it was started alone."""
    if not all(name in os.environ for name in GROUP_VARIABLES):
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise ConfigError(
            "procs: RANK, WORLD_SIZE and LOCAL_RANK must be integers in the environment"
        ) from None
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"procs: RANK={rank} is not in [0, WORLD_SIZE={world})")
    return Place(rank, world, local)


def timeout() -> float:
    """Seconds a rank waits for its peers (``BYZMTL_TIMEOUT``, default 600)."""
    text = os.environ.get(TIMEOUT_VARIABLE, "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(
            f"{TIMEOUT_VARIABLE}: expected a positive number of seconds, got {text!r}"
        )
    return value


def join(place: Place, device: str) -> None:
    """Join the group of the environment, over gloo. On a CUDA device each rank takes GPU
    ``LOCAL_RANK`` modulo the GPUs it sees. (What the ranks exchange is gathered through the
    CPU in this stage, so gloo serves CUDA runs too; nccl would also refuse two ranks on one
    GPU.)"""
    import torch
    import torch.distributed as dist

    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        torch.cuda.set_device(place.local_rank % torch.cuda.device_count())
    dist.init_process_group(
        "gloo",
        init_method="env://",
        rank=place.rank,
        world_size=place.world,
        timeout=timedelta(seconds=timeout()),
    )


def leave() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    """A TCP port of the loopback interface that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def spawn(command: Sequence[str], procs: int, quiet_peers: bool = True) -> int:
    """Run ``command`` as ranks 0..procs-1 of a group on this machine; the exit status: rank
    0's, or, where rank 0 succeeded or was stopped, that of the first rank that failed. Ranks
    other than 0 print nothing on stdout (``quiet_peers``). Once a rank has failed, the others
    get ``GRACE`` seconds to stop on their own, then are stopped."""
    port = free_port()
    children = []
    for rank in range(procs):
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "WORLD_SIZE": str(procs),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(procs),
        }
        quiet = quiet_peers and rank > 0
        out = subprocess.DEVNULL if quiet else None
        children.append(subprocess.Popen(list(command), env=env, stdout=out))
    try:
        return _wait(children)
    finally:
        for child in children:  # on KeyboardInterrupt too: no rank outlives the launcher
            _stop(child)


def _wait(children: list[subprocess.Popen[bytes]]) -> int:
    failed_at: float | None = None
    stopped: set[int] = set()
    while any(child.poll() is None for child in children):
        codes = [child.poll() for child in children]
        if failed_at is None and any(code not in (None, 0) for code in codes):
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > GRACE:
            for rank, child in enumerate(children):
                if child.poll() is None:
                    stopped.add(rank)
                    _stop(child)
        time.sleep(0.02)
    finals = [int(child.returncode) for child in children]
    failed = [(r, code) for r, code in enumerate(finals) if code and r not in stopped]
    if finals[0] != 0 and 0 not in stopped:  # rank 0 has reported the error
        failed = [(r, code) for r, code in failed if r > 0 and code != finals[0]]
        status = finals[0]
    elif failed:
        status = failed[0][1]
    else:
        return finals[0]
    for rank, code in failed:  # a rank that stopped on its own account
        print(f"byzmtl: error: rank {rank} stopped with exit status {code}", file=sys.stderr)
    return status if status > 0 else 1


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(5)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def exit_status(error: BaseException) -> int:
    """The exit status the command line gives ``error`` (2: the user's input; 1: anything
    else)."""
    from byzmtl.datasets import DatasetError
    from byzmtl.registry import RegistryError

    return 2 if isinstance(error, ConfigError | RegistryError | DatasetError) else 1


def command_run(
    args: argparse.Namespace,
    config: RunConfig,
    default_out: Callable[[str], Path],
    report: Callable[[dict[str, Any]], str],
) -> int:
    """``byzmtl run`` with ``--procs P`` > 1 (start P ranks here) or as one rank of a group:
    ``default_out(case)`` names the folder when ``--out`` is not given, ``report(summary)`` is
    printed by rank 0 (the command line's table)."""
    place = environment()
    if place is None:
        from byzmtl.results import check_destination

        if args.out is not None:
            check_destination(args.out, args.overwrite)  # before any rank starts
        return spawn([sys.executable, "-m", "byzmtl", *args.argv], config.procs)
    if config.procs not in (1, place.world):
        raise ConfigError(
            f"procs: {config.procs} processes asked, but this process is one of {place.world} "
            f"(WORLD_SIZE); leave procs out under torchrun"
        )
    config = config.model_copy(update={"procs": place.world})
    body = partial(_new_run, args, config, default_out)
    return _in_group(place, config.device, args, report, body)


def command_resume(
    args: argparse.Namespace, config: RunConfig, report: Callable[[dict[str, Any]], str]
) -> int:
    """``byzmtl run --resume DIR`` of a run of ``config.procs`` > 1 processes (its stored
    configuration, checked by :func:`byzmtl.resume.check_resume`): start as many ranks here,
    or be one of a group of exactly that size (torchrun)."""
    place = environment()
    if place is None:
        return spawn([sys.executable, "-m", "byzmtl", *args.argv], config.procs)
    if place.world != config.procs:
        raise ConfigError(
            f"procs: {args.resume} was run by {config.procs} processes and continues with as many"
            f", not {place.world} (WORLD_SIZE)"
        )
    return _in_group(place, config.device, args, report, partial(_continued_run, args))


Outcome = tuple["Destination | None", "Result"]  # rank 0's folder (None elsewhere), the result


def _in_group(
    place: Place,
    device: str,
    args: argparse.Namespace,
    report: Callable[[dict[str, Any]], str],
    body: Callable[[Ranks], Outcome],
) -> int:
    """Join the group, run ``body`` as this rank and leave; rank 0 reports as one process
    would, every rank stops with the status of the first failure."""
    from byzmtl.engine.ranks import AgreedFailure, PeerLost, Ranks

    join(place, device)
    first = place.rank == 0
    try:
        destination, result = body(Ranks(place.rank, place.world))
    except PeerLost as lost:  # a rank died or went silent: every rank says so, and stops
        print(f"byzmtl: error: {lost}", file=sys.stderr)
        return 1
    except AgreedFailure as failure:  # rank 0 reports it, as one process would
        if first:
            raise failure.error from None
        return exit_status(failure.error)
    except Exception as error:  # this rank's own, outside an agreed step
        if first:
            raise
        print(f"byzmtl: error: rank {place.rank}: {error}", file=sys.stderr)
        return exit_status(error)
    finally:
        leave()
    if destination is not None and not args.quiet:
        print(report(result.summary))
        print(f"results: {destination.out}")
    return 0


def _on_rank_0(ranks: Ranks, action: Callable[[], T]) -> T | None:
    """``action()`` on rank 0 (None elsewhere), agreed over the ranks."""
    return ranks.agree(lambda: action() if ranks.rank == 0 else None)


def _new_run(
    args: argparse.Namespace, config: RunConfig, default_out: Callable[[str], Path], ranks: Ranks
) -> Outcome:
    from byzmtl.destination import claim, claim_new
    from byzmtl.experiment import prepare, run
    from byzmtl.results import RUN, check_destination, write_into
    from byzmtl.resume import start

    if args.out is not None:
        _on_rank_0(ranks, lambda: check_destination(args.out, args.overwrite))
    experiment = ranks.agree(lambda: prepare(config))
    destination = _on_rank_0(
        ranks,
        lambda: (
            claim(args.out, args.overwrite, RUN)
            if args.out is not None
            else claim_new(default_out(config.case), RUN)
        ),
    )
    with destination if destination is not None else nullcontext():
        config = experiment.config
        checkpoints = _on_rank_0(
            ranks, lambda: start(destination, config, args.quiet) if destination else None
        )
        progress = ranks.rank == 0 and not args.no_progress
        result = run(experiment, progress=progress, checkpoints=checkpoints)
        if destination is not None:
            write_into(result, destination)
    return destination, result


def _continued_run(args: argparse.Namespace, ranks: Ranks) -> Outcome:
    from byzmtl.destination import claim
    from byzmtl.results import INTERRUPTED
    from byzmtl.resume import check_resumable, continue_run

    run_dir: Path = args.resume
    destination = _on_rank_0(ranks, lambda: claim(run_dir, False, INTERRUPTED))
    with destination if destination is not None else nullcontext():
        _on_rank_0(ranks, lambda: check_resumable(run_dir))  # it may have ended before the claim
        result = continue_run(run_dir, destination, ranks, progress=not args.no_progress)
    return destination, result
