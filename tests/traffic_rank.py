"""One rank of tests/test_exchange_traffic.py: two gathers of known objects, then the traffic
this rank counted, as JSON in the folder given."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from byzmtl import distributed
from byzmtl.engine.ranks import Ranks


def objects(rank: int) -> list[object]:
    """Rank ``rank``'s objects: a tensor (pickled with its storage) and a list of bytes, of
    sizes that differ between ranks (so the gather pads)."""
    tensor = torch.arange(100 * (rank + 1), dtype=torch.float64)
    return [(rank, tensor), [b"x" * (1000 + 7 * rank), "text"]]


def equal(a: object, b: object) -> bool:
    """The same nested lists and tuples of equal tensors (same dtype) and equal values."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        same_shape = type(a) is type(b) and len(a) == len(b)
        return same_shape and all(equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def main(folder: Path) -> None:
    place = distributed.environment()
    assert place is not None
    distributed.join(place, "cpu")
    ranks = Ranks.current()
    same = []
    for g in range(2):
        gathered = ranks.gathered(objects(place.rank)[g])
        expected = [objects(r)[g] for r in range(place.world)]
        same.append(equal(gathered, expected))
    traffic = ranks.traffic
    record = {
        "same": same,
        "sent": traffic.sent,
        "received": traffic.received,
        "wait_seconds": traffic.wait_seconds,
        "codec_seconds": traffic.codec_seconds,
    }
    (folder / f"rank-{place.rank}.json").write_text(json.dumps(record))
    distributed.leave()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
