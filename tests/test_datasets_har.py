"""UCI HAR reader: the in-repository samples (original rows; re-created rows of all 30
subjects), the full folder ($BYZMTL_DATA/har), and small fake folders."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest

from byzmtl.datasets import DatasetError, HarDataset, load_har, read_har_matrix, read_har_vector
from byzmtl.datasets import har as har_module
from tests.data import make_samples

ACTIVITIES = [
    "WALKING",
    "WALKING_UPSTAIRS",
    "WALKING_DOWNSTAIRS",
    "SITTING",
    "STANDING",
    "LAYING",
]
# per-activity row counts (train, test), in activity_labels order, of the original UCI HAR v1.0
# and of the re-creation from the same volunteers' recordings (its README's table)
ROW_COUNTS = {
    "original": ([1226, 1073, 986, 1286, 1374, 1407], [496, 471, 420, 491, 532, 537]),
    "re-creation": ([1226, 1073, 987, 1293, 1423, 1413], [496, 471, 420, 508, 556, 545]),
}
TEST_SUBJECTS = {2, 4, 9, 10, 12, 13, 18, 20, 24}


@pytest.fixture(scope="module")
def har(full_har: Path) -> HarDataset:
    return load_har(full_har)


def test_original_rows_in_the_original_layout(har_original: Path) -> None:
    data = load_har(har_original.parent)  # the folder above 'UCI HAR Dataset' works too
    assert data.x_train.shape == (75, 561) and data.x_test.shape == (25, 561)
    assert data.x_train.dtype == np.float32
    x = np.concatenate([data.x_train, data.x_test])  # rows 1-100 of the original X_train.txt
    expected = np.array([0.28858451, -0.020294171, -0.13290514, -0.9952786], dtype=np.float32)
    np.testing.assert_array_equal(x[0, :4], expected)
    # (row, column, value) as written in the file (rows and columns counted from 1)
    for row, column, value in [
        (1, 561, -5.8626924e-002),
        (50, 1, 2.7930326e-001),
        (50, 303, -9.9997837e-001),
        (100, 1, 2.2172674e-001),
        (100, 561, 4.8844258e-002),
    ]:
        assert x[row - 1, column - 1] == np.float32(value)
    assert np.all((x >= -1) & (x <= 1))
    assert data.feature_names[0] == "tBodyAcc-mean()-X" and len(data.feature_names) == 561
    assert data.activity_names == ACTIVITIES


def test_original_rows_labels_and_subjects(har_original: Path) -> None:
    activity = np.concatenate(
        [read_har_vector(har_original / split / f"y_{split}.txt") for split in ("train", "test")]
    )
    subject = read_har_vector(har_original / "train" / "subject_train.txt")
    assert activity.dtype == np.int64 and subject.dtype == np.int64
    assert np.bincount(activity, minlength=7)[1:].tolist() == [22, 0, 0, 24, 27, 27]
    assert subject.tolist() == [1] * 75
    assert load_har(har_original).subject_test.tolist() == [1] * 25


def test_original_rows_keep_the_original_file_format(har_original: Path) -> None:
    """CRLF line ends and one or two leading spaces before each value, as in UCI's files."""
    value = rb" {1,2}-?\d\.\d{7}e[-+]\d{3}"
    train = gzip.decompress((har_original / "train" / "X_train.txt.gz").read_bytes())
    test = (har_original / "test" / "X_test.txt").read_bytes()
    assert train.startswith(b"  2.8858451e-001 -2.0294171e-002")
    assert test.startswith(b"  2.8526329e-001 -8.8888110e-003")
    for content, rows in ((train, 75), (test, 25)):
        lines = content.split(b"\r\n")
        assert len(lines) == rows + 1 and lines[-1] == b"" and b"\n" not in b"".join(lines)
        assert all(re.fullmatch(rb"(?:%s){561}" % value, line) for line in lines[:-1])


def test_recreated_sample_has_every_subject_and_activity(har_sample: Path) -> None:
    data = load_har(har_sample)
    assert data.x_train.shape == (126, 561) and data.x_test.shape == (54, 561)
    assert set(data.subject_test.tolist()) == TEST_SUBJECTS
    assert set(data.subject_train.tolist()) | TEST_SUBJECTS == set(range(1, 31))
    for split_subjects, labels in (
        (data.subject_train, data.y_train),
        (data.subject_test, data.y_test),
    ):
        for subject in np.unique(split_subjects):
            assert sorted(labels[split_subjects == subject].tolist()) == list(range(6)), subject
    assert np.isfinite(data.x_train).all() and np.all(np.abs(data.x_test) <= 1)


def _same_files(sample: Path, rebuilt: Path) -> None:
    """The two folders hold the same file names with the same (decompressed) content."""
    files = sorted(p.relative_to(sample) for p in sample.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(rebuilt) for p in rebuilt.rglob("*") if p.is_file())
    for name in files:
        file = name.name.removesuffix(".gz")
        assert make_samples.read_content((sample / name).parent, file) == (
            make_samples.read_content((rebuilt / name).parent, file)
        ), name


def test_recreated_sample_is_rebuilt_from_the_full_data(
    full_har: Path, har_sample: Path, tmp_path: Path
) -> None:
    make_samples.har_recreated_sample(full_har, tmp_path)
    _same_files(har_sample, tmp_path / make_samples.HAR_FOLDER)


def test_original_sample_is_rebuilt_from_the_original_rows(
    full_har: Path, har_original: Path, tmp_path: Path
) -> None:
    source = full_har.parent / "original_sample"  # where the project's data folder keeps them
    if not source.is_dir():
        pytest.skip(f"no {source} (the 100 original rows) in BYZMTL_DATA")
    make_samples.har_original_sample(source, tmp_path)
    _same_files(har_original, tmp_path / make_samples.HAR_FOLDER)


def test_full_dataset(har: HarDataset) -> None:
    counts = (
        np.bincount(har.y_train, minlength=6).tolist(),
        np.bincount(har.y_test, minlength=6).tolist(),
    )
    assert counts in ROW_COUNTS.values()
    assert har.x_train.shape == (sum(counts[0]), 561) and har.x_test.shape == (sum(counts[1]), 561)
    assert har.x_train.dtype == np.float32 and har.x_test.dtype == np.float32
    assert len(har.feature_names) == 561
    assert har.feature_names[0] == "tBodyAcc-mean()-X"
    assert har.feature_names[-1] == "angle(Z,gravityMean)"
    assert har.activity_names == ACTIVITIES
    for y in (har.y_train, har.y_test, har.subject_train, har.subject_test):
        assert y.dtype == np.int64
    assert set(har.subject_test.tolist()) == TEST_SUBJECTS
    assert set(har.subject_train.tolist()) | TEST_SUBJECTS == set(range(1, 31))
    assert np.count_nonzero(har.subject_train == 1) == 347
    assert np.isfinite(har.x_train).all() and np.isfinite(har.x_test).all()


def test_regular_files_take_the_fast_parser(
    har_original: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object) -> None:
        raise AssertionError("the line-by-line parser is for irregular files only")

    monkeypatch.setattr(har_module, "_parse_matrix_strictly", fail)
    assert read_har_matrix(har_original / "test" / "X_test.txt", 561).shape == (25, 561)
    assert read_har_matrix(har_original / "train" / "X_train.txt.gz", 561).shape == (75, 561)


def _write_fake(
    root: Path, n_features: int = 5, rows: tuple[int, int] = (4, 3), gz: bool = False
) -> Path:
    """A small HAR folder; value (r, c) of a split is r + c / 10 (rows from 0)."""
    folder = root / "UCI HAR Dataset"
    folder.mkdir(parents=True)
    (folder / "features.txt").write_text(
        "".join(f"{k} feature-{k}()\n" for k in range(1, n_features + 1))
    )
    (folder / "activity_labels.txt").write_text(
        "".join(f"{k} {name}\n" for k, name in enumerate(ACTIVITIES, start=1))
    )
    for split, n in zip(("train", "test"), rows, strict=True):
        (folder / split).mkdir()
        lines = [" ".join(f"{r + c / 10:.7e}" for c in range(n_features)) for r in range(n)]
        text = "".join(f" {line}\r\n" for line in lines).encode()
        name = folder / split / f"X_{split}.txt"
        if gz:
            (name.parent / f"{name.name}.gz").write_bytes(gzip.compress(text))
        else:
            name.write_bytes(text)
        (folder / split / f"y_{split}.txt").write_text("".join(f"{r % 6 + 1}\n" for r in range(n)))
        subject = 2 if split == "test" else 1
        (folder / split / f"subject_{split}.txt").write_text(f"{subject}\n" * n)
    return folder


@pytest.mark.parametrize("gz", [False, True], ids=["txt", "txt.gz"])
def test_fake_folder_reads_feature_count_from_features_txt(tmp_path: Path, gz: bool) -> None:
    folder = _write_fake(tmp_path, gz=gz)
    data = load_har(folder)
    assert data.x_train.shape == (4, 5) and data.x_test.shape == (3, 5)
    np.testing.assert_allclose(data.x_train[2], [2.0, 2.1, 2.2, 2.3, 2.4], rtol=1e-6)
    assert data.y_train.tolist() == [0, 1, 2, 3]
    assert data.subject_test.tolist() == [2, 2, 2]
    assert data.feature_names == [f"feature-{k}()" for k in range(1, 6)]
    np.testing.assert_array_equal(load_har(tmp_path).x_test, data.x_test)  # the parent folder


def _x_file(folder: Path) -> Path:
    return folder / "train" / "X_train.txt"


def test_ragged_row_names_file_and_line(tmp_path: Path) -> None:
    folder = _write_fake(tmp_path)
    lines = _x_file(folder).read_bytes().split(b"\r\n")
    lines[2] += b" 9.0"
    _x_file(folder).write_bytes(b"\r\n".join(lines))
    with pytest.raises(DatasetError, match=r"X_train\.txt: expected 5 values on line 3, found 6"):
        load_har(folder)
    lines[2] = b"1.0 2.0"
    _x_file(folder).write_bytes(b"\r\n".join(lines))
    with pytest.raises(DatasetError, match=r"X_train\.txt: expected 5 values on line 3, found 2"):
        load_har(folder)


def test_bad_token_and_inner_blank_line_name_the_line(tmp_path: Path) -> None:
    folder = _write_fake(tmp_path)
    lines = _x_file(folder).read_bytes().split(b"\r\n")
    _x_file(folder).write_bytes(b"\r\n".join([*lines[:1], b"1 2 x 4 5", *lines[1:]]))
    with pytest.raises(DatasetError, match=r"X_train\.txt: expected numbers on line 2"):
        load_har(folder)
    _x_file(folder).write_bytes(b"\r\n".join([*lines[:1], b"", *lines[1:]]))
    with pytest.raises(DatasetError, match=r"X_train\.txt: expected 5 values on line 2, found 0"):
        load_har(folder)


def test_trailing_blank_lines_are_allowed(tmp_path: Path) -> None:
    folder = _write_fake(tmp_path)
    _x_file(folder).write_bytes(_x_file(folder).read_bytes() + b"\r\n\r\n")
    assert load_har(folder).x_train.shape == (4, 5)


def test_row_count_mismatch(tmp_path: Path) -> None:
    folder = _write_fake(tmp_path)
    (folder / "test" / "subject_test.txt").write_text("2\n2\n")
    with pytest.raises(DatasetError, match=r"subject_test\.txt: expected 3 rows.*found 2"):
        load_har(folder)


def test_unknown_activity_label(tmp_path: Path) -> None:
    folder = _write_fake(tmp_path)
    (folder / "train" / "y_train.txt").write_text("1\n2\n7\n3\n")
    with pytest.raises(
        DatasetError, match=r"y_train\.txt: expected an activity id .* line 3, found 7"
    ):
        load_har(folder)


def test_missing_file_and_folder_name_the_path_and_the_source(tmp_path: Path) -> None:
    folder = _write_fake(tmp_path)
    (folder / "test" / "y_test.txt").unlink()
    with pytest.raises(DatasetError) as caught:
        load_har(folder)
    assert str(folder / "test" / "y_test.txt") in str(caught.value)
    assert "archive.ics.uci.edu/dataset/240" in str(caught.value)
    _x_file(folder).unlink()
    with pytest.raises(
        DatasetError, match=r"X_train\.txt: expected X_train\.txt or X_train\.txt\.gz"
    ):
        load_har(folder)
    with pytest.raises(DatasetError, match="no such folder"):
        load_har(tmp_path / "elsewhere")
