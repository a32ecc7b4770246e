"""Figure files: the formats byzmtl writes, and :func:`save_figure`, which writes a figure
whole or not at all."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

FORMATS = ("png", "pdf", "svg")
DPI = 130


def check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    """The figure formats, validated (png, pdf, svg); ValueError naming the bad one."""
    chosen = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in formats))
    for name in chosen:
        if name not in FORMATS:
            raise ValueError(f"format: {name!r} is not one of {', '.join(FORMATS)}")
    if not chosen:
        raise ValueError("format: name at least one of png, pdf, svg")
    return chosen


def save_figure(fig: Figure, stem: Path, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Write ``fig`` as ``stem``.<format> for every format (each through a temporary file and a
    rename: readers never see half a figure) and close it."""
    written, umask = [], os.umask(0)
    os.umask(umask)
    try:
        for name in formats:
            path = stem.with_name(f"{stem.name}.{name}")
            handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            os.close(handle)
            try:
                fig.savefig(temporary, dpi=DPI, format=name)
                os.chmod(temporary, 0o666 & ~umask)  # mkstemp's files: owner only
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
            written.append(path)
    finally:
        plt.close(fig)
    return written
