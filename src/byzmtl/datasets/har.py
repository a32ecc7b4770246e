"""UCI HAR ("Human Activity Recognition Using Smartphones") in its original folder layout.

Layout of the ``UCI HAR Dataset`` folder (only these files are read)::

    features.txt            one line "index name" per feature column, indices 1, 2, ...
    activity_labels.txt     one line "id NAME" per activity (1 WALKING ... 6 LAYING)
    train/X_train.txt       one window per line: as many whitespace-separated floats as there
                            are lines in features.txt (e.g. " 2.8858451e-001 -2.0294171e-002")
    train/y_train.txt       one activity id per line
    train/subject_train.txt one subject id per line
    test/...                the same with "test"

Any X file may be gzip-compressed as ``X_train.txt.gz``; line endings may be LF or CRLF. Empty
lines are allowed only at the end of a file.
"""

from __future__ import annotations

import gzip
import io
import os
import urllib.request
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from byzmtl.datasets.errors import DatasetError

HAR_URL = "https://archive.ics.uci.edu/dataset/240/human+activity+recognition+using+smartphones"
HAR_ZIP_URL = (
    "https://archive.ics.uci.edu/static/public/240/human+activity+recognition+using+smartphones.zip"
)
HAR_FOLDER = "UCI HAR Dataset"
_SOURCE = f"UCI HAR is available from {HAR_URL}; byzmtl.datasets.download_har fetches it"


@dataclass(frozen=True, eq=False)
class HarDataset:
    """UCI HAR as arrays: features ``float32 (n, f)``, activities ``int64`` in ``0..k-1`` (the
    position of the activity id in activity_labels.txt) and subject ids ``int64`` as in the files.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    subject_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    subject_test: np.ndarray
    feature_names: list[str]
    activity_names: list[str]


def _error(path: Path, expected: str, found: str) -> DatasetError:
    return DatasetError(f"{path}: expected {expected}, found {found}. {_SOURCE}")


def _read(path: Path) -> bytes:
    """A file's bytes, gunzipped when they start with the gzip magic bytes."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _error(path, "a readable file", f"{type(exc).__name__}: {exc.strerror}") from exc
    if not raw.startswith(b"\x1f\x8b"):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise _error(path, "a complete gzip stream", f"corrupt gzip data ({exc})") from exc


def _rows(path: Path, data: bytes, width: int | None) -> list[list[bytes]]:
    """The whitespace-separated tokens of each line, trailing empty lines dropped; with a
    ``width``, every line must have exactly that many tokens."""
    lines = data.split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    rows = [line.split() for line in lines]
    if width is not None:
        for number, tokens in enumerate(rows, start=1):
            if len(tokens) != width:
                raise _error(path, f"{width} values on line {number}", f"{len(tokens)}")
    return rows


def _parse_matrix_strictly(path: Path, data: bytes, n_features: int) -> np.ndarray:
    """Line-by-line parse that names the first offending line; slow, for irregular files."""
    rows = _rows(path, data, n_features)
    matrix = np.empty((len(rows), n_features), dtype=np.float32)
    for number, tokens in enumerate(rows, start=1):
        try:
            matrix[number - 1] = [float(token) for token in tokens]
        except ValueError as exc:
            raise _error(path, f"numbers on line {number}", f"{exc}") from exc
    return matrix


def read_har_matrix(path: str | os.PathLike[str], n_features: int) -> np.ndarray:
    """Read one X file (``X_train.txt``, ``X_test.txt``, optionally ``.gz``) as ``float32
    (n, n_features)``.

    A C-speed parse handles regular files; anything irregular (a ragged row, a non-numeric
    token, an empty line inside the file) is re-read line by line to report the file and line.
    """
    import pandas as pd  # here: a run that reads no HAR file never imports it

    path = Path(path)
    data = _read(path)
    try:
        frame = pd.read_csv(
            io.BytesIO(data),
            sep=r"\s+",
            header=None,
            dtype=np.float32,
            engine="c",
            skip_blank_lines=False,
        )
        matrix = frame.to_numpy()
    except ValueError:
        return _parse_matrix_strictly(path, data, n_features)
    if matrix.shape[1] != n_features or np.isnan(matrix).any():
        return _parse_matrix_strictly(path, data, n_features)
    return matrix


def read_har_vector(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a one-integer-per-line file (``y_*.txt``, ``subject_*.txt``) as ``int64 (n,)``."""
    path = Path(path)
    rows = _rows(path, _read(path), 1)
    vector = np.empty(len(rows), dtype=np.int64)
    for number, (token,) in enumerate(rows, start=1):
        try:
            vector[number - 1] = int(token)
        except (ValueError, OverflowError) as exc:
            raise _error(path, f"an integer on line {number}", f"{token!r}") from exc
    return vector


def _read_names(path: Path) -> tuple[np.ndarray, list[str]]:
    """Ids and names of an "id name" file (features.txt, activity_labels.txt)."""
    rows = _rows(path, _read(path), None)
    if not rows:
        raise _error(path, "at least one 'id name' line", "an empty file")
    ids = np.empty(len(rows), dtype=np.int64)
    names = []
    for number, tokens in enumerate(rows, start=1):
        if len(tokens) < 2 or not tokens[0].isdigit():
            found = b" ".join(tokens).decode(errors="replace")
            raise _error(path, f"'id name' on line {number}", repr(found))
        ids[number - 1] = int(tokens[0])
        names.append(b" ".join(tokens[1:]).decode())
    return ids, names


def _locate(root: Path) -> Path:
    """``root`` itself, or ``root/UCI HAR Dataset`` when ``root`` is the folder above it."""
    if not (root / "features.txt").exists() and (root / HAR_FOLDER).is_dir():
        return root / HAR_FOLDER
    if not root.is_dir():
        raise _error(root, f"the '{HAR_FOLDER}' folder", "no such folder")
    return root


def _x_path(folder: Path, split: str) -> Path:
    plain = folder / split / f"X_{split}.txt"
    compressed = plain.with_name(plain.name + ".gz")
    if plain.is_file():
        return plain
    if compressed.is_file():
        return compressed
    raise _error(plain, f"{plain.name} or {compressed.name}", "neither")


def _load_split(
    folder: Path, split: str, n_features: int, activity_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x_path = _x_path(folder, split)
    y_path = folder / split / f"y_{split}.txt"
    subject_path = folder / split / f"subject_{split}.txt"
    x = read_har_matrix(x_path, n_features)
    activity = read_har_vector(y_path)
    subject = read_har_vector(subject_path)
    for other_path, other in ((y_path, activity), (subject_path, subject)):
        if len(other) != len(x):
            raise _error(other_path, f"{len(x)} rows, as many as {x_path.name}", f"{len(other)}")
    order = np.argsort(activity_ids)
    position = np.searchsorted(activity_ids, activity, sorter=order)
    position = np.minimum(position, len(order) - 1)
    labels = order[position]
    unknown = np.flatnonzero(activity_ids[labels] != activity)
    if unknown.size:
        line = int(unknown[0]) + 1
        raise _error(
            y_path,
            f"an activity id of activity_labels.txt ({', '.join(map(str, activity_ids))}) "
            f"on line {line}",
            f"{activity[line - 1]}",
        )
    return x, labels.astype(np.int64), subject


def load_har(root: str | os.PathLike[str]) -> HarDataset:
    """Load the ``UCI HAR Dataset`` folder (or the folder containing it) as a :class:`HarDataset`.

    The number of feature columns is the number of lines of features.txt; activity labels are
    mapped to 0..k-1 in the order of activity_labels.txt (so 1..6 become 0..5). Rows, labels and
    subjects of each split must agree in number.
    """
    folder = _locate(Path(root))
    feature_ids, feature_names = _read_names(folder / "features.txt")
    if not np.array_equal(feature_ids, np.arange(1, len(feature_ids) + 1)):
        first = int(np.flatnonzero(feature_ids != np.arange(1, len(feature_ids) + 1))[0])
        raise _error(
            folder / "features.txt",
            f"feature index {first + 1} on line {first + 1}",
            f"{feature_ids[first]}",
        )
    activity_ids, activity_names = _read_names(folder / "activity_labels.txt")
    with ThreadPoolExecutor(max_workers=2) as pool:
        train, test = pool.map(
            lambda split: _load_split(folder, split, len(feature_names), activity_ids),
            ("train", "test"),
        )
    return HarDataset(*train, *test, feature_names=feature_names, activity_names=activity_names)


def download_har(root: str | os.PathLike[str]) -> Path:
    """Fetch the UCI HAR zip from the UCI repository, extract it into ``root`` and return the
    path of the ``UCI HAR Dataset`` folder.

    The UCI archive wraps a second zip (``UCI HAR Dataset.zip``), which is extracted too. UCI
    publishes no checksum for this archive, so the download cannot be verified against one; the
    files are only checked by :func:`load_har` when read.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(HAR_ZIP_URL, timeout=120) as response:
            payload = response.read()
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            archive.extractall(root)
        inner = root / f"{HAR_FOLDER}.zip"
        if inner.is_file():
            with zipfile.ZipFile(inner) as archive:
                archive.extractall(root)
            inner.unlink()
    except (OSError, zipfile.BadZipFile) as exc:
        raise _error(root / HAR_FOLDER, f"a zip archive from {HAR_ZIP_URL}", f"{exc}") from exc
    return _locate(root)
