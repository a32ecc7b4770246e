"""Tables of named columns, written as CSV without pandas (whose import costs a second of every
run), byte for byte as ``pandas.DataFrame(columns).to_csv(path, index=False)`` writes them:

- a header line of the column names, then one line per row, ``\\n`` line ends;
- floats in numpy's shortest round-trip form (``0.1``, ``1e-05``, ``inf``), NaN as an empty
  field; integers and booleans as ``str`` gives them; text as it is;
- fields quoted only where they hold a comma, a quote or a line break (``csv.QUOTE_MINIMAL``,
  quotes doubled).

``tests/test_tables.py`` checks the equality with pandas on generated tables.
:meth:`Table.frame` builds the pandas DataFrame, importing pandas only then.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


class Table:
    """Columns of equal length, by name, in order (each a 1-d numpy array)."""

    def __init__(self, columns: Mapping[str, Any]) -> None:
        self.columns = {str(name): np.asarray(values) for name, values in columns.items()}
        lengths = {len(values) for values in self.columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: {sorted(lengths)}")
        if any(values.ndim != 1 for values in self.columns.values()):
            raise ValueError("every column must be one-dimensional")

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __contains__(self, name: object) -> bool:
        return name in self.columns

    def frame(self) -> pd.DataFrame:
        """The table as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.columns)

    def to_csv(self, path: str | Path | None = None) -> str:
        """The CSV text (see the module docstring); also written to ``path`` if given."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(list(self.columns))
        writer.writerows(self._rows())
        text = buffer.getvalue()
        if path is not None:
            with open(path, "w", newline="") as file:
                file.write(text)
        return text

    def _rows(self) -> Iterator[tuple[str, ...]]:
        fields = [_as_text(values) for values in self.columns.values()]
        return zip(*fields, strict=True) if fields else iter(())


def _as_text(values: np.ndarray) -> list[str]:
    """One column's fields as pandas writes them."""
    if values.dtype.kind == "f":
        text = values.astype(str)
        text[np.isnan(values)] = ""
        return text.tolist()
    if values.dtype.kind in "iub":
        return values.astype(str).tolist()
    return ["" if value is None else str(value) for value in values.tolist()]
