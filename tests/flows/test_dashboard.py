"""The dashboard over all runs: its aggregates, its page (escaping, links, size at 10,000 concepts), the
``sstar dashboard`` command and the refresh by every catalog run, and its flag on blown-up words."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest

from bench.dashboard_size import metrics_row
from common.norms import BLOWN_UP_RATIO
from reports.dashboard import DASHBOARD_KEY, DashboardState, render_dashboard, summarise
from storage.results import ResultStore
from storage.store.open import open_store

T0 = datetime(2024, 5, 1, 2, 0, tzinfo=timezone.utc)
EVIL = "<script>alert('x')</script>"


def _row(run: int, concept_id: str, status: str, lift: float | None = None, **extra) -> dict:
    timings = dict(train_seconds=10.0, eval_seconds=2.0) if status == "ok" else {}
    created = T0 + timedelta(days=run, seconds=len(concept_id))
    return metrics_row(f"run-{run}", concept_id, status, created, lift, **{**timings, **extra})


@pytest.fixture
def rows() -> list[dict]:
    return [
        _row(1, "cat", "ok", 0.10, train_seconds=30.0),
        _row(1, "dog", "ok", -0.02, train_seconds=50.0),
        _row(1, "vase", "failed", error="ingest failed: vase/01.jpg: truncated 'x'"),
        _row(2, "cat", "skipped", 0.10),
        _row(2, "dog", "ok", 0.04, train_seconds=20.0),
        _row(2, "vase", "failed", error="ingest failed: vase/03.jpg: truncated 'y'\nmore"),
        _row(2, "pot", "failed", error="ingest failed: pot/07.jpg: truncated 'z'"),
        _row(2, "cup", "failed", error="NaN loss at step 3"),
    ]


def test_summary_latest_runs_reasons_and_slowest(rows: list[dict]) -> None:
    dashboard = summarise(rows)
    latest = {r["concept_id"]: (r["status"], r["run_id"]) for r in dashboard.latest}
    assert latest == {
        "cat": ("skipped", "run-2"),
        "dog": ("ok", "run-2"),
        "vase": ("failed", "run-2"),
        "pot": ("failed", "run-2"),
        "cup": ("failed", "run-2"),
    }
    assert [r["run_id"] for r in dashboard.runs] == ["run-1", "run-2"]
    first, second = dashboard.runs
    assert (first["ok"], first["failed"], first["skipped"], first["concepts"]) == (2, 1, 0, 3)
    assert (second["ok"], second["failed"], second["skipped"], second["concepts"]) == (1, 3, 1, 5)
    assert first["mean_lift"] == pytest.approx(0.04) and second["mean_lift"] == pytest.approx(0.04)
    assert first["train_seconds"] == 80.0 and first["eval_seconds"] == 4.0
    assert [(g["reason"], g["concepts"]) for g in dashboard.reasons] == [
        ("NaN loss at step #", 1),
        ("ingest failed: pot/#.jpg: truncated '…'", 1),
        ("ingest failed: vase/#.jpg: truncated '…'", 1),
    ]
    # the latest ok learning per concept: dog's run-2 (20 s) replaces its run-1 (50 s)
    assert [(r["concept_id"], r["train_seconds"]) for r in dashboard.slowest] == [("cat", 30.0), ("dog", 20.0)]


def test_reasons_group_failures_that_differ_only_in_particulars() -> None:
    rows = [_row(1, f"c{i}", "failed", error=f"ingest failed: c{i}/0{i}.jpg: truncated '{i}'") for i in range(4)]
    rows.append(_row(1, "z", "failed", error="NaN loss at step 12"))
    (first, second) = summarise(rows).reasons
    assert (first["reason"], first["concepts"]) == ("ingest failed: c#/#.jpg: truncated '…'", 4)
    assert first["examples"] == ["c0", "c1", "c2", "c3"] and second["concepts"] == 1


def _data(html: str) -> dict:
    match = re.search(r"<script type='application/json' id='concept-data'>(.*?)</script>", html, re.S)
    assert match
    return json.loads(match.group(1))


def test_page_links_escapes_and_charts(rows: list[dict], tmp_path) -> None:
    rows.append(_row(2, "evil", "failed", error=EVIL))
    html = render_dashboard(summarise(rows), results=ResultStore(open_store(str(tmp_path))))
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    data = _data(html)
    table = {r[0]: dict(zip(data["columns"], r)) for r in data["rows"]}
    assert table["dog"]["prefix"] == f"../embeddings/dog/{'cd' * 8}" and data["grid"] == "grid.png"
    assert table["evil"]["prefix"] is None and table["evil"]["error"] == EVIL  # data, rendered as text by the script
    charts = re.findall(r"data-chart-for='([^']+)'", html)
    assert charts == ["runs-counts", "runs-seconds", "lift-histogram", "slowest"]
    assert html.count("Chart.js v") == 1 and "<svg" not in html
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", html)  # nothing loaded from elsewhere
    assert "Learned word loses to words (0)" in html  # dog's latest lift is +0.04 now
    assert "href='run-2.html'" in html


def test_blown_up_words_are_flagged_and_rows_without_a_norm_show_a_dash(tmp_path) -> None:
    rows = [
        _row(1, "cat", "ok", 0.10, norm_ratio=BLOWN_UP_RATIO * 2.5),
        _row(2, "cat", "skipped", 0.10),  # skipped rows carry no norm: the same digest's learning's counts
        _row(1, "dog", "ok", 0.02, norm_ratio=3.0),
        _row(1, "old", "ok", 0.01),  # written before norm_ratio existed
        _row(1, "moved", "ok", 0.01, norm_ratio=50.0),
        _row(2, "moved", "skipped", 0.01, digest="ef" * 8),  # another result now: its norm is unknown
        _row(1, "vase", "failed", error="truncated", norm_ratio=None),
    ]
    dashboard = summarise(rows)
    assert dashboard.norm_ratios == {"cat": BLOWN_UP_RATIO * 2.5, "dog": 3.0}
    html = render_dashboard(dashboard, results=ResultStore(open_store(str(tmp_path))))
    panel = html[html.index("Blown-up words (1)") :]
    panel = panel[: panel.index("</table>")]
    assert f"<td>cat</td><td class='num'><span class=\"blown\">blown up: {BLOWN_UP_RATIO * 2.5:.1f}×" in panel
    assert "dog" not in panel and "old" not in panel
    data = _data(html)
    table = {r[0]: dict(zip(data["columns"], r)) for r in data["rows"]}
    assert data["blown_up"] == BLOWN_UP_RATIO and "norm ×vocab" in html
    assert [table[c]["norm_ratio"] for c in ("cat", "dog", "old", "moved", "vase")] == [25.0, 3.0, None, None, None]
    quiet = render_dashboard(summarise(rows[2:4]), results=ResultStore(open_store(str(tmp_path))))
    assert "Blown-up words (0)" in quiet and "blown up:" not in quiet


def test_a_state_stored_before_norm_ratio_still_renders(rows: list[dict], tmp_path) -> None:
    """A dashboard state written before the metrics had ``norm_ratio`` reads, adds new rows and renders."""
    import io

    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(DashboardState().add(rows).to_parquet()))
    older = table.drop_columns(["norm_ratio"])
    sink = io.BytesIO()
    pq.write_table(older, sink)
    state = DashboardState.from_parquet(sink.getvalue()).add([_row(3, "new", "ok", 0.2, norm_ratio=12.0)])
    html = render_dashboard(state.dashboard(), results=ResultStore(open_store(str(tmp_path))))
    assert "Blown-up words (1)" in html and "blown up: 12.0×" in html
    assert state.dashboard().norm_ratios == {"new": 12.0}


def test_page_stays_under_5_mb_at_10000_concepts(tmp_path) -> None:
    from bench.dashboard_size import synthetic_rows

    html = render_dashboard(
        summarise(synthetic_rows(10_000, runs=30, changed=300)), results=ResultStore(open_store(str(tmp_path)))
    )
    size = len(html.encode())
    assert len(_data(html)["rows"]) == 10_000
    assert size < 5_000_000, size


def test_catalog_runs_refresh_it_and_the_command_rebuilds_it(two_runs) -> None:
    from flows.cli import main

    page = two_runs.out / DASHBOARD_KEY
    assert page.is_file(), "every catalog run refreshes the dashboard"
    data = _data(page.read_text(encoding="utf-8"))
    assert {r[0]: r[1] for r in data["rows"]} == {
        "red-square": "skipped",
        "blue-square": "skipped",
        "corrupt": "failed",
    }
    page.unlink()
    assert main(["dashboard", "--out", str(two_runs.out)]) == 0
    assert page.is_file() and "views-run-2" in page.read_text(encoding="utf-8")


class _Log:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, message: str, *args) -> None:
        self.warnings.append(message % args)


def _metrics_rows(rows: list[dict]):
    from storage.metrics import MetricsRow

    return [MetricsRow(**row) for row in rows]


def _table_statuses(out) -> dict[str, str]:
    return {r[0]: r[1] for r in _data((out / DASHBOARD_KEY).read_text(encoding="utf-8"))["rows"]}


def test_a_run_adds_its_rows_to_the_stored_state(rows: list[dict], tmp_path) -> None:
    """refresh_dashboard reads the state, not the metrics: rows given to it but absent from the metrics
    still reach the page; a corrupt state, or a run the state already holds, rebuilds from the metrics."""
    from reports.dashboard import (
        STATE_KEY,
        DashboardState,
        refresh_dashboard,
        write_dashboard,
    )
    from storage.metrics import append_metrics

    out = tmp_path / "out"
    append_metrics(str(out), _metrics_rows([r for r in rows if r["run_id"] == "run-1"]))
    write_dashboard(str(out))
    assert _table_statuses(out) == {"cat": "ok", "dog": "ok", "vase": "failed"}
    run_2 = [r for r in rows if r["run_id"] == "run-2"]  # not appended to the metrics
    log = _Log()
    refresh_dashboard(str(out), run_2, log)
    assert log.warnings == []
    assert _table_statuses(out) == {"cat": "skipped", "dog": "ok", "vase": "failed", "pot": "failed", "cup": "failed"}
    state = DashboardState.from_parquet((out / STATE_KEY).read_bytes())
    assert state.dashboard().runs == summarise(rows).runs  # the merged state equals the fold over all rows

    refresh_dashboard(str(out), run_2, log)  # the state already holds run-2: rebuilt from the metrics
    assert _table_statuses(out) == {"cat": "ok", "dog": "ok", "vase": "failed"}

    (out / STATE_KEY).write_bytes(b"not parquet")
    refresh_dashboard(str(out), [_row(3, "new", "ok", 0.1)], log)
    assert "dashboard state unreadable" in log.warnings[0]
    assert "new" not in _table_statuses(out)  # rebuilt from the metrics, which do not hold run 3


def test_refresh_failure_is_logged_not_raised(tmp_path) -> None:
    from reports.dashboard import refresh_dashboard

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    log = _Log()
    assert refresh_dashboard(str(blocker / "out"), [_row(1, "a", "ok", 0.1)], log) is None
    assert "sstar dashboard --out" in log.warnings[0]
