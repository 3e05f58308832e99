"""Metrics partitions as older sstar versions wrote them, before a column existed (the readers must still
take them: the dashboard, ``sql/views.sql``, ``storage.metrics``)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from storage.metrics import METRICS_SCHEMA

OLD_RUN = "20250101T000000-old00000"


def write_old_partition(out: Path, missing: str) -> None:
    """One ``ok`` row of ``old-concept`` in a metrics file without the column ``missing`` (run_date lives in
    the folder name, as always)."""
    names = [n for n in METRICS_SCHEMA.names if n not in (missing, "run_date")]
    schema = pa.schema([METRICS_SCHEMA.field(n) for n in names])
    row = {n: None for n in names} | {
        "run_id": OLD_RUN,
        "concept_id": "old-concept",
        "status": "ok",
        "inversion_lift": 0.1,
        "created_at": datetime(2025, 1, 1, tzinfo=timezone.utc),
    }
    folder = out / "metrics" / "run_date=2025-01-01"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([row], schema=schema), folder / "old.parquet")
