"""sql/views.sql run as-is by a real DuckDB over two real runs' metrics: a local folder and S3 on moto
(pyarrow datasets registered in DuckDB). The counts must be those of the runs that wrote the rows, and the
dashboard's aggregates must agree with the views."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.flows.conftest import TwoRuns

pytestmark = pytest.mark.slow

VIEWS = Path(__file__).resolve().parents[2] / "sql" / "views.sql"


def _connect(out_uri: str, s3=None):
    import duckdb

    from storage.metrics import metrics_dataset

    con = duckdb.connect()
    con.register("metrics_files", metrics_dataset(out_uri, s3))
    con.execute(VIEWS.read_text(encoding="utf-8"))
    return con


def _dicts(con, sql: str) -> list[dict]:
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def _check_views(con, runs: TwoRuns) -> None:
    first, second = (runs.summaries[r]["counts"] for r in runs.run_ids)
    assert first == {"ok": 2, "failed": 1, "skipped": 0} and second == {"ok": 0, "failed": 1, "skipped": 2}
    assert con.execute("SELECT count(*) FROM metrics").fetchone()[0] == 6
    by_run = {r["run_id"]: r for r in _dicts(con, "SELECT * FROM runs")}
    assert set(by_run) == set(runs.run_ids)
    for run_id in runs.run_ids:
        summary = runs.summaries[run_id]
        row = by_run[run_id]
        assert {s: row[s] for s in ("ok", "failed", "skipped")} == summary["counts"]
        assert row["concepts"] == sum(summary["counts"].values())
        if summary["mean_inversion_lift"] is None:
            assert row["mean_lift"] is None
        else:
            assert row["mean_lift"] == pytest.approx(summary["mean_inversion_lift"])
    assert by_run["views-run-1"]["train_seconds"] > 0 and by_run["views-run-1"]["eval_seconds"] > 0
    latest = {r["concept_id"]: r for r in _dicts(con, "SELECT * FROM latest_per_concept")}
    assert {c: r["status"] for c, r in latest.items()} == {
        "red-square": "skipped",
        "blue-square": "skipped",
        "corrupt": "failed",
    }
    assert all(r["run_id"] == "views-run-2" for r in latest.values())
    assert latest["red-square"]["inversion_lift"] is not None  # a skipped row carries the learning run's scores
    failures = _dicts(con, "SELECT * FROM failures ORDER BY run_id")
    assert [(f["run_id"], f["concept_id"]) for f in failures] == [
        ("views-run-1", "corrupt"),
        ("views-run-2", "corrupt"),
    ]
    assert failures[0]["reason"] and "corrupt/00.jpg" in failures[0]["error"]
    assert str(con.execute("SELECT typeof(run_date) FROM metrics LIMIT 1").fetchone()[0]) == "DATE"


def test_views_over_a_local_output_folder(two_runs: TwoRuns) -> None:
    _check_views(_connect(str(two_runs.out)), two_runs)


def test_views_over_s3(two_runs: TwoRuns, moto_endpoint, s3_client) -> None:
    """The same metrics files, copied byte for byte to a bucket on the moto server, read through pyarrow's S3."""
    import uuid

    from storage.store.open import open_store
    from tests.conftest import BUCKET, make_settings

    settings = make_settings(moto_endpoint)
    out_uri = f"s3://{BUCKET}/views-{uuid.uuid4().hex[:8]}/out"
    store = open_store(out_uri, settings)
    files = sorted((two_runs.out / "metrics").rglob("*.parquet"))
    # each run appends its rows as its chunks are published, and the rest (skipped, unusable) at its end
    assert {path.name.rsplit("-", 1)[0] for path in files} == set(two_runs.run_ids)
    for path in files:
        store.put(path.relative_to(two_runs.out).as_posix(), path.read_bytes())
    _check_views(_connect(out_uri, settings), two_runs)


def test_dashboard_agrees_with_the_views(two_runs: TwoRuns) -> None:
    from reports.dashboard import summarise
    from storage.metrics import read_metrics

    con = _connect(str(two_runs.out))
    dashboard = summarise(read_metrics(str(two_runs.out)).to_pylist())
    views_latest = _dicts(
        con, "SELECT concept_id, status, run_id, inversion_lift FROM latest_per_concept ORDER BY concept_id"
    )
    assert [
        {k: r[k] for k in ("concept_id", "status", "run_id", "inversion_lift")} for r in dashboard.latest
    ] == views_latest
    views_runs = _dicts(con, "SELECT * FROM runs ORDER BY started_at, run_id")
    for mine, theirs in zip(dashboard.runs, views_runs, strict=True):
        for key in ("run_id", "concepts", "ok", "failed", "skipped"):
            assert mine[key] == theirs[key], key
        for key in ("train_seconds", "eval_seconds", "mean_lift"):
            assert mine[key] == pytest.approx(theirs[key]), key
    reasons = _dicts(
        con,
        "SELECT reason, count(*) AS n FROM latest_per_concept WHERE status = 'failed' "
        "GROUP BY reason ORDER BY n DESC, reason",
    )
    assert [(g["reason"], g["concepts"]) for g in dashboard.reasons] == [(r["reason"], r["n"]) for r in reasons]


def test_failure_reason_masks_particulars_like_the_sql() -> None:
    import duckdb

    from reports.dashboard import failure_reason

    errors = [
        "ingest failed: corrupt/00.jpg: cannot identify image 'x 12.jpg'\nTraceback …",
        'scoring failed: cannot load CLIP "ViT-B-32" with 3 retries',
        "NaN loss at step 37",
        "",
        "é" * 300,
    ]
    con = duckdb.connect()
    sql = VIEWS.read_text(encoding="utf-8")
    reason_sql = sql[sql.index("CASE WHEN error IS NULL") : sql.index("END AS reason") + len("END")]
    for error in errors:
        (theirs,) = con.execute(f"SELECT {reason_sql} FROM (SELECT ?::VARCHAR AS error)", [error]).fetchone()
        assert failure_reason(error) == theirs, error
    assert failure_reason(errors[0]) == "ingest failed: corrupt/#.jpg: cannot identify image '…'"
    assert failure_reason(None) is None
