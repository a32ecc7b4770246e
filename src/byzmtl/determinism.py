"""The ``deterministic`` run setting: torch's deterministic algorithms for the run's duration.

On the CPU a run is bit-identical to its repeats whatever this setting, and so is a run sharded
differently (the engine sums in a fixed order). On CUDA some kernels sum with atomic adds, in
an order that varies from run to run: ``index_add_`` where many edges meet at one receiver
(normalising weights, per-receiver sums, the attacks' neighbourhood statistics, the
diagnostics), and the backward passes of gathers, index selections and convolutions (the
learning case studies' gradients). Under ``torch.use_deterministic_algorithms(True)`` torch
replaces them by kernels that sum in a fixed order; the sparse products (cuSPARSE, never
transposed) and the dense ones (cuBLAS, one stream) are deterministic already, cuBLAS provided
that ``CUBLAS_WORKSPACE_CONFIG`` holds a deterministic workspace size when torch first calls it.
The one reduction torch has no deterministic CUDA kernel for, a floating-point ``cumsum`` (the
regret of the diagnostics), runs on the host (:mod:`byzmtl.recording`).

Runs on different devices still differ in their last bits: the kernels round differently.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"
DETERMINISTIC_WORKSPACES = (":4096:8", ":16:8")  # the values cuBLAS documents as deterministic


def use_deterministic_cublas(device: torch.device) -> None:
    """Before a deterministic run on ``device``: on CUDA, set ``CUBLAS_WORKSPACE_CONFIG`` to
    ``:4096:8`` unless it holds a deterministic value already. cuBLAS takes the setting when
    torch first calls it in the process, so this comes before any work on the device; it is
    left set (the process's cuBLAS keeps its workspace anyway)."""
    if device.type == "cuda" and os.environ.get(CUBLAS_WORKSPACE) not in DETERMINISTIC_WORKSPACES:
        os.environ[CUBLAS_WORKSPACE] = DETERMINISTIC_WORKSPACES[0]


@contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """``torch.use_deterministic_algorithms(True)`` inside the block when ``enabled``; torch's
    previous setting (with its ``warn_only``) is restored after, whatever happens inside."""
    if not enabled:
        yield
        return
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)
