"""Smoke test of the fault table (``bench/faults.py``, issue 20): one local ``kill -9`` while the catalog
trains, the same command again, and the row that says it came back whole.

Two concepts, 6 steps, a checkpoint every 2, on the session's Prefect test server (``--prefect-api-url``)
and the session's tiny model, so the three runs (reference, struck, re-run) fit in about a minute."""

from __future__ import annotations

import csv

import pytest

from bench import faults

pytestmark = pytest.mark.slow


def test_one_local_kill_while_training_comes_back_whole(prefect_harness, tiny_model_dir, tmp_path, capsys):
    from prefect.settings import PREFECT_API_URL

    table = tmp_path / "faults.csv"
    code = faults.main(
        [
            "--quick",
            "--concepts", "2",
            "--steps", "6",
            "--checkpoint-every", "2",
            "--model", str(tiny_model_dir),
            "--prefect-api-url", str(PREFECT_API_URL.value()),
            "--work", str(tmp_path / "work"),
            "--out", str(table),
        ]
    )  # fmt: skip
    assert code == 0
    (row,) = list(csv.DictReader(table.open()))
    assert (row["path"], row["fault"], row["struck"]) == ("local", "kill -9", "training"), row
    assert row["exit_after_fault"] == "-9" and row["finished"] == "yes", row
    for check in ("same_embeddings", "index_ok", "status_ok"):
        assert row[check] == "yes", (check, row)
    assert (row["duplicate_rows"], row["retrained"]) == ("0", "none"), row
    resumed = dict(item.split(":") for item in row["resumed_from"].split())  # from a checkpoint, or from 0
    assert sorted(resumed) == ["shape-0", "shape-1"] and all(int(s) % 2 == 0 for s in resumed.values()), row
    assert float(row["recover_s"]) > 0
    assert "| local | 0 | kill -9 | training |" in capsys.readouterr().out
