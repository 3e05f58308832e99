"""Size and load time of the dashboard at catalog scale (issue 14).

    python -m bench.dashboard_size [--concepts 10000] [--runs 30] [--changed 300] [--loads 3]

Builds metrics rows for a catalog of ``--concepts`` concepts: a first run that learns all of them,
then ``--runs - 1`` nightly runs over about ``--changed`` random concepts each (70% re-learned, the
rest skipped; 1% fail), seeded, renders ``reports/dashboard.html`` with :mod:`reports.dashboard` into a
temporary folder and opens it ``--loads`` times in headless Chromium (tests/browser.py), printing the page size and the
navigation's ``loadEventEnd`` (scripts run, charts and the table's first page drawn).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

T0 = datetime(2024, 5, 1, 2, 0, tzinfo=timezone.utc)


def metrics_row(
    run_id: str, concept_id: str, status: str, created_at: datetime, lift: float | None = None, **extra: object
) -> dict:
    """One metrics row (a dict with the metrics columns) of a learned word with CLIP image similarity 0.8
    and ``lift`` over its baseline (no similarities when ``lift`` is None); ``extra`` overrides columns."""
    row = dict(
        run_id=run_id,
        run_date=created_at.date(),
        concept_id=concept_id,
        digest="cd" * 8,
        token=f"<{concept_id}>",
        status=status,
        error=None,
        model="/models/sd15",
        steps=600,
        vectors=1,
        lr=5e-3,
        image_similarity=None if lift is None else 0.8,
        text_similarity=0.3,
        baseline_image_similarity=None if lift is None else 0.8 - lift,
        baseline_text_similarity=0.3,
        inversion_lift=lift,
        final_loss=0.1,
        train_seconds=None,
        eval_seconds=None,
        embedding_uri=None,
        grid_uri=None,
        created_at=created_at,
    )
    row.update(extra)
    return row


def synthetic_rows(concepts: int = 10_000, runs: int = 30, changed: int = 300) -> list[dict]:
    """Metrics rows (dicts with the metrics columns) of ``runs`` runs over ``concepts`` concepts."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for run in range(1, runs + 1):
        todo = concepts if run == 1 else int(rng.integers(changed // 2, changed * 3 // 2 + 1))
        for i in range(concepts) if run == 1 else rng.choice(concepts, size=min(todo, concepts), replace=False):
            i = int(i)
            status = "failed" if rng.random() < 0.01 else ("ok" if run == 1 or rng.random() < 0.7 else "skipped")
            lift = None if status == "failed" else round(float(rng.normal(0.06, 0.05)), 4)
            rows.append(
                metrics_row(
                    f"run-{run:03d}",
                    f"concept-{i:05d}",
                    status,
                    T0 + timedelta(days=run, seconds=i),
                    lift,
                    digest=f"{i:016x}",
                    error="ingest failed: concept-x/00.jpg: cannot identify image file" if status == "failed" else None,
                    train_seconds=round(float(rng.gamma(9.0, 4.0)), 1) if status == "ok" else None,
                    eval_seconds=round(float(rng.gamma(4.0, 2.0)), 1) if status == "ok" else None,
                )
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.dashboard_size", description=__doc__.split("\n")[0])
    p.add_argument("--concepts", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--changed", type=int, default=300)
    p.add_argument("--loads", type=int, default=3)
    args = p.parse_args(argv)
    from reports.dashboard import render_dashboard, summarise
    from storage.results import ResultStore
    from storage.store.open import open_store
    from tests.browser import open_page

    rows = synthetic_rows(args.concepts, args.runs, args.changed)
    with tempfile.TemporaryDirectory(prefix="sstar-dashboard-") as tmp:
        tick = time.perf_counter()
        html = render_dashboard(summarise(rows), results=ResultStore(open_store(tmp)))
        built = time.perf_counter() - tick
        page = Path(tmp) / "reports" / "dashboard.html"
        page.parent.mkdir()
        page.write_text(html, encoding="utf-8")
        print(f"{args.concepts} concepts, {len(rows)} rows: {len(html.encode()) / 1e6:.2f} MB, built in {built:.2f} s")
        for _ in range(args.loads):
            result = open_page(page, "performance.getEntriesByType('navigation')[0].loadEventEnd")
            print(
                f"  loaded in {result.value / 1000:.2f} s" + (f" with errors {result.errors}" if result.errors else "")
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
