"""A ``--plugin`` for tests/test_results_safety.py: makes a ``byzmtl run`` pause or die at chosen
moments, named (comma-separated) in the environment variable BYZMTL_TEST_MOMENTS:

    hold                  at the start of the computation, wait for the file $BYZMTL_TEST_RELEASE
    fixed-time            the default results name gets the time 2000-01-01 00:00:00
    kill-before-commit    SIGKILL once the new folder is complete, before it is put in place
    kill-after-swap       SIGKILL once the new folder is in place, before the old is deleted
    kill-between-renames  without the exchange (two renames), SIGKILL between the renames
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from byzmtl.engine import Simulation

MOMENTS = set(os.environ.get("BYZMTL_TEST_MOMENTS", "").split(","))


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


if "hold" in MOMENTS:  # a method: the command has imported byzmtl.experiment.run already
    compute = Simulation.run

    def held(self: Simulation, *args: Any, **kwargs: Any) -> Any:
        release = Path(os.environ["BYZMTL_TEST_RELEASE"])
        deadline = time.monotonic() + 120
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return compute(self, *args, **kwargs)

    Simulation.run = held  # type: ignore[method-assign]

if "fixed-time" in MOMENTS:
    strftime = time.strftime
    time.strftime = lambda form, *when: strftime(form, (2000, 1, 1, 0, 0, 0, 5, 1, -1))

if MOMENTS & {"kill-before-commit", "kill-after-swap", "kill-between-renames"}:
    from byzmtl import destination

    if "kill-before-commit" in MOMENTS:
        destination.Destination.commit = lambda self, staging: die()  # type: ignore[method-assign]

    if "kill-after-swap" in MOMENTS:
        rmtree = shutil.rmtree

        def rmtree_or_die(path: Any, *args: Any, **kwargs: Any) -> None:
            name = Path(path).name  # the old folder, under the staging name after an exchange
            if destination.STAGING in name or destination.OLD in name:
                die()
            rmtree(path, *args, **kwargs)

        shutil.rmtree = rmtree_or_die  # type: ignore[assignment]

    if "kill-between-renames" in MOMENTS:
        rename = os.rename
        destination.exchange = lambda a, b: False

        def rename_or_die(source: Any, target: Any) -> None:
            if destination.STAGING in Path(source).name:  # staging -> destination: the second
                die()
            rename(source, target)

        os.rename = rename_or_die
