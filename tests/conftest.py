"""Shared test fixtures. Real data lives in ../shared/data beside the project (see its README)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real datasets; its absence is an error, never a silent skip."""
    if not SHARED_DATA.is_dir():
        raise FileNotFoundError(f"real test data expected at {SHARED_DATA} (see DESIGN.md)")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Run the tests with one torch thread: their small tensors gain nothing from more, and on
    a busy machine spinning threads make them many times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
