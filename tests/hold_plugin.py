"""A ``--plugin`` for tests/test_resume.py: holds a ``byzmtl run`` still at a chosen checkpoint,
so that the test can kill it there with SIGKILL.

    BYZMTL_TEST_HOLD=n        sleep once the n-th checkpoint is committed (0: before the first;
                              -1: never, the run goes on)
    BYZMTL_TEST_HELD=FILE     written just before sleeping, to tell the test
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from byzmtl.checkpoints import CheckpointFolder

HOLD = int(os.environ.get("BYZMTL_TEST_HOLD", "-1"))
HELD = Path(os.environ.get("BYZMTL_TEST_HELD", "held"))
_write = CheckpointFolder.write
_written = [0]


def _hold() -> None:
    HELD.write_text("held")
    time.sleep(300)


def _held_write(self: CheckpointFolder, *args: Any) -> None:
    if HOLD == 0:
        _hold()
    _write(self, *args)
    _written[0] += 1
    if _written[0] == HOLD:
        _hold()


if "BYZMTL_TEST_HOLD" in os.environ:  # not when pytest imports this file for its doctests
    CheckpointFolder.write = _held_write  # type: ignore[method-assign]
