"""What the benchmark scripts share: the load average they record and how they save results."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def load_average() -> float:
    """The one-minute load average: timings are only comparable on a quiet machine."""
    return os.getloadavg()[0]


def save(out: Path | None, mode: str, threads: int, result: Any) -> None:
    """Write one measurement as JSON to ``out`` (nothing when ``out`` is None)."""
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"mode": mode, "threads": threads, "result": result}
    out.write_text(json.dumps(record, indent=1) + "\n")
