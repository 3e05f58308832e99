"""The ``relearn_reason`` column came later: partitions written before it read as null, in Python, in
sql/views.sql (from a registered dataset and from DuckDB's own read_parquet) and in the dashboard, whose stored
state may predate it too."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from storage.metrics import MetricsRow, append_metrics, metrics_dataset, read_metrics
from tests.storage.old_partitions import write_old_partition

VIEWS = Path(__file__).resolve().parents[2] / "sql" / "views.sql"
NEW_RUN = "20250102T000000-new00000"


def _new_rows() -> list[MetricsRow]:
    return [
        MetricsRow(NEW_RUN, "a", "ok", relearn_reason="model changed"),
        MetricsRow(NEW_RUN, "b", "ok", relearn_reason="model changed"),
        MetricsRow(NEW_RUN, "c", "failed", error="boom", relearn_reason="images changed + model changed"),
        MetricsRow(NEW_RUN, "d", "skipped"),
    ]


def test_old_partitions_read_with_a_null_relearn_reason(tmp_path: Path) -> None:
    write_old_partition(tmp_path, "relearn_reason")
    append_metrics(str(tmp_path), _new_rows())
    rows = {r["concept_id"]: r["relearn_reason"] for r in read_metrics(str(tmp_path)).to_pylist()}
    assert rows == {
        "old-concept": None,
        "a": "model changed",
        "b": "model changed",
        "c": "images changed + model changed",
        "d": None,
    }


def test_views_count_reasons_over_old_and_new_partitions(tmp_path: Path) -> None:
    import duckdb

    write_old_partition(tmp_path, "relearn_reason")
    append_metrics(str(tmp_path), _new_rows())
    expected = [(NEW_RUN, "model changed", 2), (NEW_RUN, "images changed + model changed", 1)]
    con = duckdb.connect()
    con.register("metrics_files", metrics_dataset(str(tmp_path)))
    con.execute(VIEWS.read_text(encoding="utf-8"))
    assert con.execute("SELECT * FROM relearn_reasons").fetchall() == expected
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 2
    # the DuckDB CLI's way (README): read_parquet with union_by_name over the old file and the new one
    cli = duckdb.connect()
    cli.execute(
        f"CREATE VIEW metrics_files AS SELECT * FROM read_parquet('{tmp_path}/metrics/*/*.parquet', "
        "hive_partitioning = true, union_by_name = true)"
    )
    cli.execute(VIEWS.read_text(encoding="utf-8"))
    assert cli.execute("SELECT * FROM relearn_reasons").fetchall() == expected


def test_views_read_old_partitions_alone(tmp_path: Path) -> None:
    import duckdb

    write_old_partition(tmp_path, "relearn_reason")
    con = duckdb.connect()
    con.register("metrics_files", metrics_dataset(str(tmp_path)))
    con.execute(VIEWS.read_text(encoding="utf-8"))
    assert con.execute("SELECT concept_id, relearn_reason FROM latest_per_concept").fetchall() == [
        ("old-concept", None)
    ]
    assert con.execute("SELECT count(*) FROM relearn_reasons").fetchone()[0] == 0


def test_the_dashboard_reads_old_partitions_and_a_state_written_before_the_column(tmp_path: Path, caplog) -> None:
    from reports.dashboard import STATE_KEY, refresh_dashboard, write_dashboard
    from storage.store.open import open_store

    write_old_partition(tmp_path, "relearn_reason")
    write_dashboard(str(tmp_path))  # the page and its state from the old partition alone
    store = open_store(str(tmp_path))
    state = pq.read_table(pa.BufferReader(store.get(STATE_KEY)))
    old_state = state.drop_columns(["relearn_reason"])  # as a dashboard state written before the column
    sink = pa.BufferOutputStream()
    pq.write_table(old_state, sink)
    store.put(STATE_KEY, sink.getvalue().to_pybytes())
    rows = _new_rows()
    append_metrics(str(tmp_path), rows)
    with caplog.at_level(logging.WARNING, logger="sstar-test-dashboard"):
        uri = refresh_dashboard(str(tmp_path), [r.to_dict() for r in rows], logging.getLogger("sstar-test-dashboard"))
    assert uri is not None and not caplog.records, "the old state is read and added to, not rebuilt"
    assert "old-concept" in store.get("reports/dashboard.html").decode()
    merged = pq.read_table(pa.BufferReader(store.get(STATE_KEY))).to_pylist()
    assert {r["concept_id"]: r["relearn_reason"] for r in merged if r["kind"] == "latest"} == {
        "old-concept": None,
        "a": "model changed",
        "b": "model changed",
        "c": "images changed + model changed",
        "d": None,
    }
