"""Synthetic digit renderer: determinism, content, caching and the real-image folder reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from byzmtl.datasets import DatasetError, load_synthetic_digits, render_digits
from byzmtl.datasets import synthetic_digits as module


@pytest.fixture(scope="module")
def batch() -> tuple[np.ndarray, np.ndarray]:
    return render_digits(40, seed=7)


def test_shapes_types_and_balanced_labels(batch: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = batch
    assert images.shape == (40, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.uint8
    assert labels.tolist() == [i % 10 for i in range(40)]
    assert np.bincount(labels, minlength=10).tolist() == [4] * 10


def test_deterministic_and_independent_of_batching(batch: tuple[np.ndarray, np.ndarray]) -> None:
    images, _ = batch
    again, _ = render_digits(20, seed=7)
    assert again.tobytes() == images[:20].tobytes()
    for i in (0, 13, 37):
        alone, label = render_digits(1, seed=7, start=i)
        np.testing.assert_array_equal(alone[0], images[i])
        assert label.tolist() == [i % 10]


def test_images_are_not_blank_and_differ(batch: tuple[np.ndarray, np.ndarray]) -> None:
    images, _ = batch
    assert images.reshape(40, -1).std(axis=1).min() > 10
    assert len({image.tobytes() for image in images}) == 40
    other, _ = render_digits(40, seed=8)
    assert not np.array_equal(other, images)
    assert np.abs(other.astype(int) - images).mean() > 20


def test_digit_stands_out_from_its_border(batch: tuple[np.ndarray, np.ndarray]) -> None:
    """The centre (where the glyph is) differs from the border in most images."""
    images = batch[0].astype(float)
    centre = images[:, 8:20, 8:20].reshape(40, -1)
    border = np.concatenate([images[:, :3].reshape(40, -1), images[:, -3:].reshape(40, -1)], 1)
    spread = np.abs(np.percentile(centre, 90, axis=1) - np.median(border, axis=1))
    spread = np.maximum(spread, np.abs(np.percentile(centre, 10, axis=1) - np.median(border, 1)))
    assert np.mean(spread > 40) > 0.9


def test_cache_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_synthetic_digits(30, 10, seed=3, cache_dir=tmp_path)
    files = list(tmp_path.iterdir())
    assert [f.suffix for f in files] == [".npz"]
    assert f"v{module.RENDERER_VERSION}" in files[0].name
    assert first.x_train.shape == (30, 28, 28) and first.x_test.shape == (10, 28, 28)
    assert first.y_test.tolist() == [i % 10 for i in range(10)]
    # train and test are disjoint images
    assert not {x.tobytes() for x in first.x_train} & {x.tobytes() for x in first.x_test}

    def no_rendering(*args: object) -> None:
        raise AssertionError("a cached set must not be rendered again")

    monkeypatch.setattr(module, "render_digits", no_rendering)
    second = load_synthetic_digits(30, 10, seed=3, cache_dir=tmp_path)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(second, name), getattr(first, name))


def test_cache_location_and_corrupt_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BYZMTL_CACHE", str(tmp_path))
    data = load_synthetic_digits(10, 0, seed=1)
    (cached,) = tmp_path.glob("*.npz")
    cached.write_bytes(b"not an npz archive")
    again = load_synthetic_digits(10, 0, seed=1)
    np.testing.assert_array_equal(again.x_train, data.x_train)
    assert again.x_test.shape == (0, 28, 28)
    assert not list(tmp_path.glob("*.tmp"))


def _write_image_folder(root: Path, per_class: dict[str, int]) -> None:
    rng = np.random.default_rng(0)
    for split, count in per_class.items():
        for digit in range(10):
            folder = root / split / str(digit)
            folder.mkdir(parents=True)
            for k in range(count):
                pixels = rng.integers(0, 256, size=(40, 32, 3), dtype=np.uint8)
                pixels[..., 0] = digit * 20  # a class-dependent channel
                suffix = ".png" if k % 2 == 0 else ".jpg"
                Image.fromarray(pixels).save(folder / f"img_{k}{suffix}")


def test_source_dir_reads_real_image_layout(tmp_path: Path) -> None:
    _write_image_folder(tmp_path / "synthetic_digits", {"imgs_train": 3, "imgs_valid": 1})
    data = load_synthetic_digits(25, 10, seed=0, source_dir=tmp_path / "synthetic_digits")
    assert data.x_train.shape == (25, 28, 28) and data.x_train.dtype == np.uint8
    assert data.y_train.tolist() == [i % 10 for i in range(25)]
    assert sorted(data.y_test.tolist()) == list(range(10))
    same = load_synthetic_digits(25, 10, seed=0, source_dir=tmp_path)  # the parent folder
    np.testing.assert_array_equal(same.x_train, data.x_train)
    with pytest.raises(DatasetError, match=r"imgs_valid: expected at least 11 images, found 10"):
        load_synthetic_digits(5, 11, source_dir=tmp_path)


def test_source_dir_with_wrong_layout(tmp_path: Path) -> None:
    _write_image_folder(tmp_path, {"imgs_train": 1})
    with pytest.raises(
        DatasetError, match=r"imgs_valid[/\\]0: expected a folder .* no such folder"
    ):
        load_synthetic_digits(1, 1, source_dir=tmp_path)
    (tmp_path / "imgs_train" / "3" / "img_0.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"img_0\.png: expected a readable image"):
        load_synthetic_digits(10, 0, source_dir=tmp_path)
