"""MNIST in its original IDX format.

IDX layout (all integers big-endian):

- bytes 0-1: zero; byte 2: element type (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
  0x0D float32, 0x0E float64); byte 3: the number of dimensions ``d``;
- ``d`` unsigned int32 sizes;
- the elements in C order, ``prod(sizes) * itemsize`` bytes, nothing after them.

MNIST's images files have magic 0x00000803 (2051: uint8, 3 dimensions ``n x 28 x 28``) and its
labels files 0x00000801 (2049: uint8, 1 dimension ``n``). The files may be gzip-compressed (as
distributed) or not; compression is recognised by the gzip magic bytes, whatever the file name.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import tempfile
import urllib.request
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

from byzmtl.datasets.errors import DatasetError

MNIST_URL = "http://yann.lecun.com/exdb/mnist/"
MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"

#: sha256 of the decompressed bytes of the four canonical MNIST files.
MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
_IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_SOURCE = (
    f"MNIST is available from {MNIST_URL} (mirror {MNIST_MIRROR}); "
    "--download (byzmtl.datasets.download_mnist) fetches it"
)


def _error(path: Path, expected: str, found: str) -> DatasetError:
    return DatasetError(f"{path}: expected {expected}, found {found}. {_SOURCE}")


def _decompress(path: Path, raw: bytes) -> bytes:
    """The file's content: gunzipped when it starts with the gzip magic bytes."""
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise _error(path, "a complete gzip stream", f"corrupt gzip data ({exc})") from exc


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file, gzip-compressed or not, into an array of its type in native byte order.

    Raises :class:`DatasetError` when the file is missing, its magic number is not an IDX one,
    or its byte count differs from the product of its sizes (truncated or oversized file).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _error(path, "a readable IDX file", f"{type(exc).__name__}: {exc.strerror}") from exc
    data = _decompress(path, raw)
    if len(data) < 4:
        raise _error(path, "an IDX header of at least 4 bytes", f"{len(data)} bytes")
    magic = int.from_bytes(data[:4], "big")
    type_code, ndim = data[2], data[3]
    if data[:2] != b"\x00\x00" or type_code not in _IDX_TYPES or ndim == 0:
        raise _error(
            path,
            "an IDX magic number 0x0000TTDD with a known type TT and DD >= 1 dimensions "
            "(0x00000803 for images, 0x00000801 for labels)",
            f"0x{magic:08X}",
        )
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise _error(
            path, f"a {header_size}-byte header for {ndim} dimensions", f"{len(data)} bytes"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    dtype = _IDX_TYPES[type_code]
    expected = math.prod(shape) * dtype.itemsize
    found = len(data) - header_size
    if found != expected:
        kind = "truncated" if found < expected else "oversized"
        raise _error(
            path,
            f"{expected} data bytes for shape {shape} of {dtype.name}",
            f"{found} ({kind} file)",
        )
    array = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=header_size)
    return array.astype(dtype.newbyteorder("=")).reshape(shape)


def _find(root: Path, split: str, kind: str) -> Path:
    """The first existing spelling of an MNIST file name in ``root``."""
    prefix, idx = _SPLIT_PREFIX[split], {"images": "idx3", "labels": "idx1"}[kind]
    candidates = [
        root / f"{prefix}-{kind}{sep}{idx}-ubyte{suffix}"
        for sep in ("-", ".")
        for suffix in (".gz", "")
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    names = ", ".join(candidate.name for candidate in candidates)
    raise _error(root, f"one of {names}", "none of them")


def load_mnist(
    root: str | os.PathLike[str], split: Literal["train", "test"]
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 (n, 28, 28)`` and labels ``uint8 (n,)`` of one MNIST split.

    ``root`` holds the files as distributed, e.g. ``train-images-idx3-ubyte.gz`` and
    ``t10k-labels-idx1-ubyte`` (gzip-compressed or not; the ``train-images.idx3-ubyte`` spelling
    is accepted too). The split is ``"train"`` (60,000 images) or ``"test"`` (10,000).
    """
    if split not in _SPLIT_PREFIX:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    root = Path(root)
    images_path, labels_path = _find(root, split, "images"), _find(root, split, "labels")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise _error(
            images_path,
            "uint8 images of shape (n, 28, 28) (magic 0x00000803)",
            f"{images.dtype.name} array of shape {images.shape}",
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise _error(
            labels_path,
            "uint8 labels of shape (n,) (magic 0x00000801)",
            f"{labels.dtype.name} array of shape {labels.shape}",
        )
    if len(labels) != len(images):
        raise _error(
            labels_path,
            f"{len(images)} labels, as many as images in {images_path.name}",
            f"{len(labels)}",
        )
    if labels.size and labels.max() > 9:
        raise _error(labels_path, "labels 0..9", f"label {int(labels.max())}")
    return images, labels


def _sha256_of_content(path: Path, raw: bytes) -> str:
    """Hex sha256 of a file's decompressed bytes (the values published for MNIST)."""
    return hashlib.sha256(_decompress(path, raw)).hexdigest()


def download_mnist(root: str | os.PathLike[str]) -> Path:
    """Fetch the four gzip-compressed MNIST files into ``root`` and return ``root``.

    Files come from the mirror (falling back to the original site); each is verified against the
    published sha256 of its decompressed bytes (:data:`MNIST_SHA256`) before it is written,
    atomically. Files already present with the right content are kept.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name, digest in MNIST_SHA256.items():
        target = root / f"{name}.gz"
        if target.is_file() and _sha256_of_content(target, target.read_bytes()) == digest:
            continue
        failures = []
        for base in (MNIST_MIRROR, MNIST_URL):
            url = f"{base}{name}.gz"
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    payload = response.read()
                found = _sha256_of_content(target, payload)
            except (OSError, DatasetError) as exc:
                failures.append(f"{url}: {exc}")
                continue
            if found != digest:
                failures.append(f"{url}: sha256 {found} of the decompressed bytes, not {digest}")
                continue
            with tempfile.NamedTemporaryFile(dir=root, prefix=f".{name}.", delete=False) as tmp:
                tmp.write(payload)
            os.replace(tmp.name, target)
            break
        else:
            raise _error(target, "a download with the published checksum", "; ".join(failures))
    return root
