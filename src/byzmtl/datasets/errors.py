"""The one exception type raised by the dataset readers."""

from __future__ import annotations


class DatasetError(Exception):
    """A dataset is missing, malformed or inconsistent.

    The message is one line: the file concerned, what was expected, what was found, and where the
    dataset can be obtained.
    """
