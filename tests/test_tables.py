"""metrics.csv and diagnostics.csv are written without pandas, byte for byte as pandas writes
them; the diagnostics' summary is computed without pandas, bit for bit as pandas computes it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from byzmtl.experiment import run
from byzmtl.tables import Table

ROWS = st.integers(0, 30)


def _column(kind: str, rows: int) -> st.SearchStrategy:
    if kind == "float":
        return hnp.arrays(np.float64, rows, elements=st.floats(allow_nan=True, allow_infinity=True))
    if kind == "float32":
        return hnp.arrays(np.float32, rows, elements=st.floats(width=32))
    if kind == "int":
        return hnp.arrays(np.int64, rows, elements=st.integers(-(2**62), 2**62))
    if kind == "bool":
        return hnp.arrays(np.bool_, rows)
    text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)
    return st.lists(text, min_size=rows, max_size=rows).map(lambda v: np.asarray(v, dtype=object))


@st.composite
def tables(draw: st.DrawFn) -> dict[str, np.ndarray]:
    rows = draw(ROWS)
    kinds = draw(st.lists(st.sampled_from(["float", "float32", "int", "bool", "text"]), max_size=6))
    names = draw(
        st.lists(
            st.text(min_size=1, max_size=6), min_size=len(kinds), max_size=len(kinds), unique=True
        )
    )
    return {name: draw(_column(kind, rows)) for name, kind in zip(names, kinds, strict=True)}


@settings(max_examples=300, deadline=None)
@given(tables())
def test_csv_is_pandas_csv_byte_for_byte(columns: dict[str, np.ndarray]) -> None:
    expected = pd.DataFrame(columns).to_csv(index=False)
    assert Table(columns).to_csv() == expected


def test_csv_of_a_run_and_its_lazy_frames(tmp_path) -> None:
    result = run({"case": "target-localization", "attackers": 5, "task": {"iterations": 40}})
    for table, frame in (
        (result.metrics_table, result.metrics),
        (result.diagnostics_table, result.diagnostics),
    ):
        assert table is not None and frame is not None
        assert table.to_csv(tmp_path / "t.csv") == frame.to_csv(index=False)
        assert (tmp_path / "t.csv").read_bytes() == frame.to_csv(index=False).encode()
        pd.testing.assert_frame_equal(frame, table.frame())
    assert result.metrics is result.metrics  # built once


def _pandas_summary(diagnostics, final_fraction: float, table: pd.DataFrame) -> dict:
    """Diagnostics.summary as it was computed with pandas (the reference)."""
    records = len(diagnostics._recorded)
    window = max(1, round(final_fraction * records))
    first = diagnostics._recorded[-window - 1] + 1 if records > window else 0
    out = {}
    for rule in diagnostics.rule_names:
        rows = table[table["rule"] == rule]
        tail = rows[rows[diagnostics.round_column] > first]
        recorded = rows.dropna(subset=["regret_mean"]).iloc[-1:]

        def final(column: str, part: pd.DataFrame) -> float | None:
            value = float(part[column].mean()) if len(part) else float("nan")
            return None if np.isnan(value) else value

        out[rule] = {
            "byzantine_weight": {
                "mean": final("byzantine_weight_mean", tail),
                "max": final("byzantine_weight_max", tail),
            },
            "own_task_weight": {
                "mean": final("own_task_weight_mean", tail),
                "min": final("own_task_weight_min", tail),
            },
            "regret": {
                "mean": final("regret_mean", recorded),
                "max": final("regret_max", recorded),
            },
        }
    return out


@pytest.mark.parametrize("attackers", [0, 7])
def test_diagnostics_summary_is_the_pandas_one_bit_for_bit(attackers: int) -> None:
    from byzmtl.recording import Diagnostics

    captured: list[Diagnostics] = []
    original = Diagnostics.summary

    def spy(self, final_fraction, table=None):
        captured.append(self)
        return original(self, final_fraction, table)

    Diagnostics.summary = spy  # type: ignore[method-assign]
    try:
        result = run(
            {
                "case": "target-localization",
                "attackers": attackers,
                "rules": ["loss", "distance", "average", "median", "none"],
                "task": {"iterations": 120},
            }
        )
    finally:
        Diagnostics.summary = original  # type: ignore[method-assign]
    (diagnostics,) = captured
    fraction = result.experiment.case.final_fraction
    expected = _pandas_summary(diagnostics, fraction, result.diagnostics)
    assert diagnostics.summary(fraction, result.diagnostics_table) == expected
    assert {
        rule: entry["diagnostics"] for rule, entry in result.summary["rules"].items()
    } == expected
