"""Overlapping runs lose nothing on the dashboard (issue 20): runs refreshing one output's dashboard at once all
keep their rows in its state (a compare-and-swap update), and the page written last is of the last state. Every
run reads the state before any writes it, on both backends; without the compare-and-swap the last whole
rewrite wins and the other runs' concepts are gone from the state and the page."""

from __future__ import annotations

import json
import logging
import re
import threading
from datetime import datetime, timedelta, timezone

from bench.dashboard_size import metrics_row
from reports.dashboard import DASHBOARD_KEY, STATE_KEY, DashboardState, refresh_dashboard
from storage.metrics import MetricsRow, append_metrics
from storage.store.base import ObjectStore

T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)


def test_runs_refreshing_at_once_keep_every_concept(root_uri: str, settings_for, store: ObjectStore, monkeypatch):
    if settings_for is not None:  # the dashboard opens the output with the environment's S3 settings
        monkeypatch.setenv("AWS_ENDPOINT_URL", settings_for.endpoint_url)
    runs = {i: [metrics_row(f"run-{i}", f"concept-{i}", "ok", T0 + timedelta(hours=i), 0.1)] for i in range(6)}
    first = runs.pop(0)
    append_metrics(root_uri, [MetricsRow(**row) for row in first], settings_for)
    refresh_dashboard(root_uri, first, logging.getLogger("test"))  # a state to start from
    for rows in runs.values():  # each run appends its metrics, then refreshes the dashboard
        append_metrics(root_uri, [MetricsRow(**row) for row in rows], settings_for)
    together, read = threading.Barrier(len(runs)), type(store).get_with_info

    def read_then_meet(self, key):
        found = read(self, key)
        if key == STATE_KEY:
            try:
                together.wait(timeout=1)  # local: the folder lock lets one in at a time, so this times out once
            except threading.BrokenBarrierError:
                pass
        return found

    monkeypatch.setattr(type(store), "get_with_info", read_then_meet)
    threads = [
        threading.Thread(target=refresh_dashboard, args=(root_uri, rows, logging.getLogger("test")))
        for rows in runs.values()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = {f"concept-{i}" for i in range(6)}
    state = DashboardState.from_parquet(store.get(STATE_KEY))
    assert set(state.latest) == everything and len(state.runs) == 6
    page = store.get(DASHBOARD_KEY).decode("utf-8")
    data = json.loads(re.search(r"id='concept-data'>(.*?)</script>", page, re.S).group(1))  # type: ignore[union-attr]
    assert {row[0] for row in data["rows"]} == everything, "the page is not of the last state"
