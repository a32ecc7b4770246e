"""Dataset readers and the synthetic digit renderer; everything returns numpy arrays.

- :mod:`~byzmtl.datasets.mnist`: MNIST from its IDX files (gzip-compressed or not).
- :mod:`~byzmtl.datasets.har`: UCI HAR from its original text-file folder layout.
- :mod:`~byzmtl.datasets.synthetic_digits`: printed digits on random backgrounds, rendered
  deterministically and cached, or read from a copy of the original Synthetic Digits images.

Every reading problem raises :class:`DatasetError` with a one-line message.
"""

from byzmtl.datasets.errors import DatasetError
from byzmtl.datasets.har import (
    HarDataset,
    download_har,
    load_har,
    read_har_matrix,
    read_har_vector,
)
from byzmtl.datasets.mnist import MNIST_SHA256, download_mnist, load_mnist, read_idx
from byzmtl.datasets.synthetic_digits import (
    RENDERER_VERSION,
    DigitsDataset,
    load_synthetic_digits,
    render_digits,
)

__all__ = [
    "MNIST_SHA256",
    "RENDERER_VERSION",
    "DatasetError",
    "DigitsDataset",
    "HarDataset",
    "download_har",
    "download_mnist",
    "load_har",
    "load_mnist",
    "load_synthetic_digits",
    "read_har_matrix",
    "read_har_vector",
    "read_idx",
    "render_digits",
]
