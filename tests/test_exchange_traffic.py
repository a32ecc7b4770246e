"""The ranks' gather counts what it moves (byzmtl.engine.ranks.Traffic): two ranks gather
objects of known pickled sizes; each gets every rank's object back, and counts its own payload
as sent and the other's as received, once per gather."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import pytest

from byzmtl import distributed
from tests.traffic_rank import objects

RANK = Path(__file__).resolve().parent / "traffic_rank.py"
TO_FIRST = Path(__file__).resolve().parent / "to_first_rank.py"


def test_each_rank_counts_its_payload_sent_and_the_others_received(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(distributed.TIMEOUT_VARIABLE, "60")
    assert distributed.spawn([sys.executable, str(RANK), str(tmp_path)], 2) == 0
    records = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    sizes = [[len(pickle.dumps(o)) for o in objects(r)] for r in (0, 1)]
    assert sizes[0] != sizes[1]  # the ranks' payloads differ: one is padded in the gather
    for rank, record in enumerate(records):
        assert record["same"] == [True, True]
        assert record["sent"] == sizes[rank]
        assert record["received"] == sizes[1 - rank]
        assert len(record["wait_seconds"]) == len(record["codec_seconds"]) == 2
        assert all(s >= 0 for s in record["wait_seconds"] + record["codec_seconds"])


def test_to_first_gives_rank_0_every_value_in_order_and_leaves_no_rank_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three ranks: rank 0 receives ranks 1 and 2's values in order; a receive that raises on
    the first stops the calls and raises after taking every value; a value rank 1 cannot
    pickle raises there and reaches rank 0 as rank 1's error; every rank is in step after."""
    monkeypatch.setenv(distributed.TIMEOUT_VARIABLE, "60")
    assert distributed.spawn([sys.executable, str(TO_FIRST), str(tmp_path)], 3) == 0
    records = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(3)]
    first = records[0]
    assert first["received"] == [[1, True], [2, True]]
    assert (first["plain"], first["refusing"], first["refused"]) == (
        "ok", "ValueError: refused rank 1", [1]
    )  # fmt: skip
    assert first["unpickled"].startswith("AgreedFailure: rank 1: ")
    assert first["unpicklable"] == []  # the failure stops the calls, not the transfers
    for record in records[1:]:
        assert record["received"] == record["refused"] == record["unpicklable"] == []
        assert record["plain"] == record["refusing"] == "ok"
    assert records[1]["unpickled"] != "ok" and records[2]["unpickled"] == "ok"
    assert all(record["after"] == [0, 1, 2] for record in records)
