"""Give freed memory back to the system: large blocks get their own mappings.

glibc's malloc serves a block of at least ``M_MMAP_THRESHOLD`` bytes (128 KiB at start) from a
mapping of its own, returned to the system by ``free``; but each time such a block is freed it
raises the threshold to that block's size (up to 32 MiB), after which blocks that size come from
the heap, and the heap keeps what is freed inside it. A run's temporaries of a few MB to 32 MB
(the per-agent arrays of a large network while it is built, a round's whole-network tensors) then
stay resident after they are freed: at a million agents about 120 bytes per agent of the case
study alone (measured, benchmarks/RESULTS.md). Fixing the threshold (which stops the raising)
returns them. Blocks under the threshold (a shard's temporaries, 2 MB) still reuse the heap,
whose pages are already mapped.

Where to call it: at the start of a process that builds large networks (the command line does);
it changes where memory comes from, never a number computed in it.
"""

from __future__ import annotations

import ctypes
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
THRESHOLD = 4 << 20  # bytes: blocks at least this large get their own mapping


def limit_heap_retention(threshold: int = THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes (see the module docstring); False,
    doing nothing, where the C library is not glibc or refuses."""
    if not sys.platform.startswith("linux"):
        return False
    try:  # the process's own symbols, libc's among them (no library search: no subprocess)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, int(threshold)))
