"""Build the real-data samples of this folder from full copies of the datasets.

    python tests/data/make_samples.py DATA [OUT]

DATA holds ``mnist/`` (the four MNIST IDX files), ``har/UCI HAR Dataset/`` (all 30 subjects in
the UCI HAR layout) and ``har/original_sample/`` (the first 100 rows of the original X_train.txt
as ``X_train.100.txt``, ``y_train.100.txt``, ``subject_train.100.txt``, and the original
``features.txt`` and ``activity_labels.txt``). OUT defaults to this folder. Every sample keeps
the source's bytes: whole lines of the HAR files, and for MNIST the IDX header with only the
count changed, then the first records. ``tests/test_datasets_*.py`` check (with ``BYZMTL_DATA``)
that a rebuild gives the same content.
"""

from __future__ import annotations

import gzip
import shutil
import struct
import sys
from pathlib import Path

MNIST_COUNTS = {"train": 400, "t10k": 200}  # the first images of each split
HAR_ORIGINAL_TRAIN = 75  # of the 100 original rows; rows 76-100 are the test split
HAR_FOLDER = "UCI HAR Dataset"
HAR_NAME_FILES = ("features.txt", "activity_labels.txt")


def read_content(folder: Path, name: str) -> bytes:
    """The content of ``folder/name.gz`` or ``folder/name``, whichever exists, gunzipped when
    it starts with the gzip magic bytes."""
    compressed = folder / f"{name}.gz"
    raw = (compressed if compressed.is_file() else folder / name).read_bytes()
    return gzip.decompress(raw) if raw.startswith(b"\x1f\x8b") else raw


def _write_gzip(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(content, mtime=0))


def mnist_sample(source: Path, out: Path) -> None:
    """The first ``MNIST_COUNTS`` images and labels of each split as gzip-compressed IDX files:
    the original header with the first size set to the count, then the first records."""
    for prefix, count in MNIST_COUNTS.items():
        for kind, idx in (("images", "idx3"), ("labels", "idx1")):
            name = f"{prefix}-{kind}-{idx}-ubyte"
            content = read_content(source, name)
            ndim = content[3]
            header_size = 4 + 4 * ndim
            sizes = struct.unpack(f">{ndim}I", content[4:header_size])
            record = 1
            for size in sizes[1:]:
                record *= size
            header = content[:4] + struct.pack(f">{ndim}I", count, *sizes[1:])
            body = content[header_size : header_size + count * record]
            _write_gzip(out / f"{name}.gz", header + body)


def _copy_name_files(source: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in HAR_NAME_FILES:
        shutil.copyfile(source / name, folder / name)


def har_original_sample(source: Path, out: Path) -> None:
    """The 100 original rows in the UCI HAR layout: rows 1-75 as the train split (X gzipped),
    rows 76-100 as the test split (X plain text), each line byte for byte (CRLF kept)."""
    folder = out / HAR_FOLDER
    _copy_name_files(source, folder)
    columns = {
        "X": (source / "X_train.100.txt").read_bytes().splitlines(keepends=True),
        "y": (source / "y_train.100.txt").read_bytes().splitlines(keepends=True),
        "subject": (source / "subject_train.100.txt").read_bytes().splitlines(keepends=True),
    }
    for split, rows in (
        ("train", slice(HAR_ORIGINAL_TRAIN)),
        ("test", slice(HAR_ORIGINAL_TRAIN, None)),
    ):
        (folder / split).mkdir(exist_ok=True)
        for column, lines in columns.items():
            content = b"".join(lines[rows])
            if column == "X" and split == "train":
                _write_gzip(folder / split / f"X_{split}.txt.gz", content)
            else:
                (folder / split / f"{column}_{split}.txt").write_bytes(content)


def har_recreated_sample(source: Path, out: Path) -> None:
    """Of every split, the first row of every (subject, activity) pair, lines in file order:
    six rows for each of the 30 subjects, in their original split."""
    folder = out / HAR_FOLDER
    _copy_name_files(source, folder)
    for split in ("train", "test"):
        x = read_content(source / split, f"X_{split}.txt").splitlines(keepends=True)
        y = (source / split / f"y_{split}.txt").read_bytes().splitlines(keepends=True)
        subject = (source / split / f"subject_{split}.txt").read_bytes().splitlines(keepends=True)
        seen: set[tuple[bytes, bytes]] = set()
        keep = []
        for row, pair in enumerate(zip(subject, y, strict=True)):
            if pair not in seen:
                seen.add(pair)
                keep.append(row)
        _write_gzip(folder / split / f"X_{split}.txt.gz", b"".join(x[i] for i in keep))
        (folder / split / f"y_{split}.txt").write_bytes(b"".join(y[i] for i in keep))
        (folder / split / f"subject_{split}.txt").write_bytes(b"".join(subject[i] for i in keep))


def build(data: Path, out: Path) -> None:
    """Every sample of this folder from the full data in ``data``."""
    mnist_sample(data / "mnist", out / "mnist")
    har_original_sample(data / "har" / "original_sample", out / "har-original")
    har_recreated_sample(data / "har" / HAR_FOLDER, out / "har-recreated")


if __name__ == "__main__":
    build(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).parent)
