"""The ``norm_ratio`` column came later: partitions written before it read as null, in Python and in sql/views.sql."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from storage.metrics import METRICS_SCHEMA, MetricsRow, append_metrics, metrics_dataset, read_metrics

VIEWS = Path(__file__).resolve().parents[2] / "sql" / "views.sql"


def _old_partition(out: Path) -> None:
    """A metrics file as sstar wrote it before norm_ratio existed (run_date lives in the folder name)."""
    names = [n for n in METRICS_SCHEMA.names if n not in ("norm_ratio", "run_date")]
    schema = pa.schema([METRICS_SCHEMA.field(n) for n in names])
    row = {n: None for n in names} | {
        "run_id": "20250101T000000-old00000",
        "concept_id": "old-concept",
        "status": "ok",
        "inversion_lift": 0.1,
        "created_at": datetime(2025, 1, 1, tzinfo=timezone.utc),
    }
    folder = out / "metrics" / "run_date=2025-01-01"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([row], schema=schema), folder / "old.parquet")


def test_old_partitions_read_with_a_null_norm_ratio(tmp_path):
    _old_partition(tmp_path)
    append_metrics(str(tmp_path), [MetricsRow("20250102T000000-new00000", "new-concept", "ok", norm_ratio=12.5)])
    rows = {r["concept_id"]: r for r in read_metrics(str(tmp_path)).to_pylist()}
    assert rows["old-concept"]["norm_ratio"] is None and rows["new-concept"]["norm_ratio"] == 12.5


def test_views_read_old_and_new_partitions(tmp_path):
    import duckdb

    _old_partition(tmp_path)
    append_metrics(str(tmp_path), [MetricsRow("20250102T000000-new00000", "new-concept", "ok", norm_ratio=2.0)])
    con = duckdb.connect()
    con.register("metrics_files", metrics_dataset(str(tmp_path)))
    con.execute(VIEWS.read_text(encoding="utf-8"))
    found = con.execute("SELECT concept_id, norm_ratio FROM latest_per_concept ORDER BY concept_id").fetchall()
    assert found == [("new-concept", 2.0), ("old-concept", None)]
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 2
