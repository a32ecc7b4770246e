"""One rank of tests/test_exchange_traffic.py's test of ``Ranks.to_first``: what rank 0 received,
and how each call ended, as JSON in the folder given."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from byzmtl import distributed
from byzmtl.engine.ranks import Ranks


def sent(rank: int) -> tuple[int, torch.Tensor]:
    """What rank ``rank`` sends: its number and a tensor whose length grows with it."""
    return rank, torch.arange(100.0 * (rank + 1))


def same(a: tuple[int, torch.Tensor], b: tuple[int, torch.Tensor]) -> bool:
    return a[0] == b[0] and a[1].dtype == b[1].dtype and torch.equal(a[1], b[1])


def ended(call: Callable[[], None]) -> str:
    """ "ok", or the exception's type and message."""
    try:
        call()
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return "ok"


def main(folder: Path) -> None:
    place = distributed.environment()
    assert place is not None
    distributed.join(place, "cpu")
    ranks = Ranks.current()
    rank = place.rank
    record: dict[str, Any] = {"received": [], "refused": [], "unpicklable": []}

    def keep(q: int, value: tuple[int, torch.Tensor]) -> None:
        record["received"].append([q, same(value, sent(q))])

    record["plain"] = ended(lambda: ranks.to_first(sent(rank), keep))

    def refuse(q: int, value: object) -> None:
        record["refused"].append(q)
        raise ValueError(f"refused rank {q}")

    record["refusing"] = ended(lambda: ranks.to_first(rank, refuse))
    value = (lambda: None) if rank == 1 else rank  # rank 1's cannot be pickled
    record["unpickled"] = ended(
        lambda: ranks.to_first(value, lambda q, v: record["unpicklable"].append(q))
    )
    record["after"] = ranks.gathered(rank)  # every rank is still in step
    (folder / f"rank-{rank}.json").write_text(json.dumps(record))
    distributed.leave()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
