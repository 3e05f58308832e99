"""The benchmarks' CSV tables: a row appended as soon as it is measured, so an interrupted table resumes."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def append_row(path: Path, columns: Sequence[str], row: Mapping[str, Any]) -> None:
    """Append ``row`` to the CSV at ``path`` under ``columns`` (the header too when the file is new); a column
    the row lacks is left empty."""
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, list(columns))
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in columns})
