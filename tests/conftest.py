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
