"""MNIST IDX reader: the in-repository sample, the full files ($BYZMTL_DATA/mnist), corrupted
copies in tmp_path."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from byzmtl.datasets import MNIST_SHA256, DatasetError, load_mnist, read_idx
from tests.data import make_samples

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
# the in-repository sample: the first 400 training and 200 test images
SAMPLE_TRAIN_COUNTS = [39, 52, 42, 41, 44, 30, 36, 42, 30, 44]
SAMPLE_TEST_COUNTS = [17, 28, 16, 16, 28, 20, 20, 24, 10, 21]


@pytest.fixture(scope="module")
def mnist_train(full_mnist: Path) -> tuple[np.ndarray, np.ndarray]:
    return load_mnist(full_mnist, "train")


@pytest.fixture(scope="module")
def mnist_test(full_mnist: Path) -> tuple[np.ndarray, np.ndarray]:
    return load_mnist(full_mnist, "test")


@pytest.mark.parametrize(
    ("split", "prefix", "counts", "first_labels"),
    [
        ("train", "train", SAMPLE_TRAIN_COUNTS, [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]),
        ("test", "t10k", SAMPLE_TEST_COUNTS, [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]),
    ],
)
def test_sample_files_are_real_idx(
    mnist_sample: Path, split: str, prefix: str, counts: list[int], first_labels: list[int]
) -> None:
    images, labels = load_mnist(mnist_sample, split)  # type: ignore[arg-type]
    n = sum(counts)
    assert images.shape == (n, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.uint8
    assert labels[:10].tolist() == first_labels
    assert np.bincount(labels, minlength=10).tolist() == counts
    assert 0 < images.mean() < 64 and images.max() == 255  # dark background, white strokes
    header = gzip.decompress((mnist_sample / f"{prefix}-images-idx3-ubyte.gz").read_bytes())[:16]
    assert struct.unpack(">4I", header) == (2051, n, 28, 28)
    header = gzip.decompress((mnist_sample / f"{prefix}-labels-idx1-ubyte.gz").read_bytes())[:8]
    assert struct.unpack(">2I", header) == (2049, n)


def test_sample_is_the_first_images_of_the_full_files(
    mnist_sample: Path,
    mnist_train: tuple[np.ndarray, np.ndarray],
    mnist_test: tuple[np.ndarray, np.ndarray],
) -> None:
    for split, full in (("train", mnist_train), ("test", mnist_test)):
        images, labels = load_mnist(mnist_sample, split)  # type: ignore[arg-type]
        np.testing.assert_array_equal(images, full[0][: len(images)])
        np.testing.assert_array_equal(labels, full[1][: len(labels)])


def _idx(type_code: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    return bytes([0, 0, type_code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


def _reencode(array: np.ndarray) -> bytes:
    """The canonical IDX bytes of a uint8 array (what the decoded file must hash to)."""
    return _idx(0x08, array.shape, array.tobytes())


def test_real_train_split_shapes_and_class_counts(
    mnist_train: tuple[np.ndarray, np.ndarray],
) -> None:
    images, labels = mnist_train
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (60000,) and labels.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == TRAIN_COUNTS


def test_real_test_split_shapes_and_class_counts(mnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = mnist_test
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == TEST_COUNTS


def test_published_checksums_of_files_and_of_decoded_arrays(
    full_mnist: Path,
    mnist_train: tuple[np.ndarray, np.ndarray],
    mnist_test: tuple[np.ndarray, np.ndarray],
) -> None:
    decoded = {
        "train-images-idx3-ubyte": mnist_train[0],
        "train-labels-idx1-ubyte": mnist_train[1],
        "t10k-images-idx3-ubyte": mnist_test[0],
        "t10k-labels-idx1-ubyte": mnist_test[1],
    }
    for name, digest in MNIST_SHA256.items():
        content = make_samples.read_content(full_mnist, name)
        assert hashlib.sha256(content).hexdigest() == digest, name
        assert hashlib.sha256(_reencode(decoded[name])).hexdigest() == digest, name


def test_uncompressed_and_alternative_spellings_read_the_same(
    mnist_sample: Path, tmp_path: Path
) -> None:
    expected = load_mnist(mnist_sample, "test")
    images_gz = (mnist_sample / "t10k-images-idx3-ubyte.gz").read_bytes()
    labels_gz = (mnist_sample / "t10k-labels-idx1-ubyte.gz").read_bytes()
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "t10k-images-idx3-ubyte").write_bytes(gzip.decompress(images_gz))
    (plain / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress(labels_gz))
    dotted = tmp_path / "dotted"
    dotted.mkdir()
    # gzip content under a name without .gz: compression is detected by the magic bytes
    (dotted / "t10k-images.idx3-ubyte").write_bytes(images_gz)
    (dotted / "t10k-labels.idx1-ubyte.gz").write_bytes(labels_gz)
    for root in (plain, dotted):
        images, labels = load_mnist(root, "test")
        np.testing.assert_array_equal(images, expected[0])
        np.testing.assert_array_equal(labels, expected[1])


def test_generic_idx_types_are_decoded_in_native_byte_order(tmp_path: Path) -> None:
    values = np.arange(-3, 3, dtype=np.int16).reshape(2, 3)
    path = tmp_path / "int16.idx"
    path.write_bytes(_idx(0x0B, (2, 3), values.astype(">i2").tobytes()))
    decoded = read_idx(path)
    assert decoded.dtype == np.int16 and decoded.dtype.isnative
    np.testing.assert_array_equal(decoded, values)
    floats = np.linspace(0, 1, 4, dtype=np.float32)
    path.write_bytes(gzip.compress(_idx(0x0D, (4,), floats.astype(">f4").tobytes())))
    np.testing.assert_array_equal(read_idx(path), floats)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (_idx(0x08, (3, 28, 28), bytes(3 * 784 - 5)), "truncated"),
        (_idx(0x08, (3, 28, 28), bytes(3 * 784 + 1)), "oversized"),
        (_idx(0x08, (3, 28, 28), bytes(3 * 784))[:10], "header"),
        (b"\x00\x00\x07\x03" + bytes(100), "0x00000703"),
        (b"\x12\x34\x08\x03" + bytes(100), "0x12340803"),
        (gzip.compress(_idx(0x08, (3, 28, 28), bytes(3 * 784)))[:-20], "gzip"),
    ],
    ids=["truncated", "oversized", "short-header", "unknown-type", "wrong-magic", "cut-gzip"],
)
def test_corrupted_idx_files_raise_with_file_name(
    tmp_path: Path, content: bytes, fragment: str
) -> None:
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DatasetError) as caught:
        read_idx(path)
    message = str(caught.value)
    assert str(path) in message and fragment in message
    assert "\n" not in message and "yann.lecun.com" in message and "--download" in message


def test_mismatched_image_and_label_counts(tmp_path: Path) -> None:
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx(0x08, (3, 28, 28), bytes(3 * 784)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx(0x08, (2,), bytes(2)))
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte: expected 3 labels.*found 2"):
        load_mnist(tmp_path, "train")


def test_wrong_kind_of_file_for_images(tmp_path: Path) -> None:
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx(0x08, (3,), bytes(3)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx(0x08, (3,), bytes(3)))
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte: expected uint8 images"):
        load_mnist(tmp_path, "train")


def test_missing_files_name_the_expected_files_and_the_source(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as caught:
        load_mnist(tmp_path, "test")
    message = str(caught.value)
    assert "t10k-images-idx3-ubyte.gz" in message and str(tmp_path) in message
    assert "ossci-datasets" in message and "--download" in message
