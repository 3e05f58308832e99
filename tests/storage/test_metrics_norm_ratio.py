"""The ``norm_ratio`` column came later: partitions written before it read as null, in Python and in sql/views.sql."""

from __future__ import annotations

from pathlib import Path

from storage.metrics import MetricsRow, append_metrics, metrics_dataset, read_metrics
from tests.storage.old_partitions import write_old_partition

VIEWS = Path(__file__).resolve().parents[2] / "sql" / "views.sql"


def test_old_partitions_read_with_a_null_norm_ratio(tmp_path):
    write_old_partition(tmp_path, "norm_ratio")
    append_metrics(str(tmp_path), [MetricsRow("20250102T000000-new00000", "new-concept", "ok", norm_ratio=12.5)])
    rows = {r["concept_id"]: r for r in read_metrics(str(tmp_path)).to_pylist()}
    assert rows["old-concept"]["norm_ratio"] is None and rows["new-concept"]["norm_ratio"] == 12.5


def test_views_read_old_and_new_partitions(tmp_path):
    import duckdb

    write_old_partition(tmp_path, "norm_ratio")
    append_metrics(str(tmp_path), [MetricsRow("20250102T000000-new00000", "new-concept", "ok", norm_ratio=2.0)])
    con = duckdb.connect()
    con.register("metrics_files", metrics_dataset(str(tmp_path)))
    con.execute(VIEWS.read_text(encoding="utf-8"))
    found = con.execute("SELECT concept_id, norm_ratio FROM latest_per_concept ORDER BY concept_id").fetchall()
    assert found == [("new-concept", 2.0), ("old-concept", None)]
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 2
