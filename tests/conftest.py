"""Shared test fixtures: the in-repository data samples, the full datasets; one torch thread; and
the seed of the shuffled test order, printed after the run; hypothesis drawing the same examples
on every run.

Small real samples of every dataset live in ``tests/data`` (see its README), so the suite runs
on any fresh clone. Tests that need the full datasets (counts, checksums, accuracy of long runs)
read them from the folder named by ``BYZMTL_DATA`` (``$BYZMTL_DATA/mnist``,
``$BYZMTL_DATA/har/UCI HAR Dataset``) and are skipped, with the reason, when it is not set.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

SAMPLES = Path(__file__).resolve().parent / "data"
DATA_VARIABLE = "BYZMTL_DATA"

# Property tests draw the same examples on every run (a failure is reproducible, a passing suite
# stays passing); HYPOTHESIS_PROFILE=explore draws new ones, to look for counterexamples.
settings.register_profile("deterministic", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


def full_data(*parts: str) -> Path:
    """``$BYZMTL_DATA/<parts>``; skips the test when the variable is unset, fails it when the
    folder it names lacks ``parts``."""
    value = os.environ.get(DATA_VARIABLE)
    wanted = "/".join(parts)
    if not value:
        pytest.skip(f"needs the full datasets: set {DATA_VARIABLE} to a folder holding {wanted}/")
    folder = Path(value).resolve().joinpath(*parts)
    if not folder.is_dir():
        pytest.fail(f"{DATA_VARIABLE}={value}: no folder {wanted}/ in it")
    return folder


@pytest.fixture(scope="session")
def mnist_sample() -> Path:
    """The first 400 training and 200 test images of MNIST, as gzip-compressed IDX files."""
    return SAMPLES / "mnist"


@pytest.fixture(scope="session")
def har_sample() -> Path:
    """The 'UCI HAR Dataset' folder of 180 rows: six of each of the 30 subjects (re-created
    features, see tests/data/README.md)."""
    return SAMPLES / "har-recreated" / "UCI HAR Dataset"


@pytest.fixture(scope="session")
def har_original() -> Path:
    """The 'UCI HAR Dataset' folder of the first 100 rows of the original X_train.txt."""
    return SAMPLES / "har-original" / "UCI HAR Dataset"


@pytest.fixture(scope="session")
def full_mnist() -> Path:
    """The complete MNIST files (``$BYZMTL_DATA/mnist``)."""
    return full_data("mnist")


@pytest.fixture(scope="session")
def full_har() -> Path:
    """The complete 'UCI HAR Dataset' folder (``$BYZMTL_DATA/har/UCI HAR Dataset``)."""
    return full_data("har", "UCI HAR Dataset")


_THREADS = pytest.StashKey[int]()


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread for every test and every example of the package's docstrings, whatever
    runs first: their small tensors gain nothing from more, on a busy machine spinning threads
    make them many times slower, and a result must not depend on which test ran before."""
    import torch

    config.stash[_THREADS] = torch.get_num_threads()
    torch.set_num_threads(1)


def pytest_unconfigure(config: pytest.Config) -> None:
    import torch

    torch.set_num_threads(config.stash.get(_THREADS, torch.get_num_threads()))


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Name the seed of the shuffled order (pytest-randomly's header line is hidden by -q)."""
    seed = getattr(config.option, "randomly_seed", None)
    if config.pluginmanager.hasplugin("randomly") and isinstance(seed, int):
        terminalreporter.write_line(
            f"tests ran in random order: rerun it with -p randomly --randomly-seed={seed}"
        )
