"""Smoke test of the first-night benchmark (``bench/first_night.py``, issue 21): three new concepts on moto S3
learned by a real ``sstar learn`` (local mode) through the counting proxy, on the session's Prefect test
server (``--prefect-api-url``) and tiny model; and the pieces its numbers rest on."""

from __future__ import annotations

import csv
import re

import pytest

from bench import first_night
from bench.api_proxy import route


def test_the_union_of_task_intervals_counts_overlaps_once():
    assert first_night.union_seconds([]) == 0
    assert first_night.union_seconds([(0, 2), (1, 3), (5, 6), (5.5, 5.7), (10, 10)]) == 4
    assert first_night.union_seconds([(4, 9), (0, 1), (2, 5)]) == 8


def test_api_routes_are_counted_without_ids():
    uuid = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
    assert route("POST", f"/api/task_runs/{uuid}/set_state?x=1") == "POST /task_runs/{id}/set_state"
    assert route("GET", "/api/admin/version") == "GET /admin/version"


def test_the_child_deployment_is_the_one_the_nightly_fans_out_to():
    target, entrypoint = first_night.child_deployment()
    assert target.count("/") == 1 and entrypoint.startswith("flows/") and ":" in entrypoint


@pytest.mark.slow
def test_three_new_concepts_through_the_counting_proxy(prefect_harness, tiny_model_dir, tmp_path, capsys):
    from prefect.settings import PREFECT_API_URL

    table = tmp_path / "first-night.csv"
    code = first_night.main(
        [
            "--n", "3",
            "--mode", "local",
            "--model", str(tiny_model_dir),
            "--prefect-api-url", str(PREFECT_API_URL.value()),
            "--work", str(tmp_path / "work"),
            "--out", str(table),
            "--label", "smoke",
        ]
    )  # fmt: skip
    assert code == 0
    (row,) = list(csv.DictReader(table.open()))
    assert (row["mode"], row["concepts"], row["pack"], row["exit"], row["learned"]) == ("local", "3", "8", "0", "3")
    # task runs reach the server as events over the proxied WebSocket: none counted, none recorded
    assert int(row["ws_events"]) > 0 and int(row["task_runs"]) >= 3, row
    assert int(row["flow_runs"]) >= 1 and int(row["api_calls"]) > 0, row
    wall, task, orchestration = float(row["wall_s"]), float(row["task_s"]), float(row["orch_s"])
    assert 0 < task < wall and orchestration == pytest.approx(wall - task, abs=0.11), row
    assert 0 < float(row["flow_s"]) < wall, row
    assert float(row["cpu_s"]) > 0 and int(row["peak_rss_mib"]) > 50, row
    assert row["database"] == "external", row
    # each 5xx the proxy saw (a loaded SQLite server answers 503 to a locked database; the client retries) is named
    named = [int(n) for n in re.findall(r"(\d+)x 5\d\d [A-Z]+ /", row["note"])]
    assert bool(named) == (int(row["http_5xx"]) > 0) and sum(named) <= int(row["http_5xx"]), row
    assert "invert-pack" in row["task_kinds"], row
    out = capsys.readouterr().out
    assert "orch_ms_per_concept" in out and "row took" in out
