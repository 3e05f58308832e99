"""What a catalog run leaves besides its concepts' results: the metrics rows its chunks did not write (one
Parquet file), the embeddings index, the HTML report and the dashboard, ``runs/<run_id>/summary.json`` and the Prefect
artifacts. Apart from :mod:`flows.learn` so that the flow reads as its DAG; the pages are imported
when a run ends, not when the coordinator starts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.sync import passed_whole
from storage.compositions import CompositionRow
from storage.metrics import STATUSES, MetricsRow
from storage.relearn import relearn_summary
from storage.store.open import open_store
from tasks.publish import write_metrics

#: the columns of the run's concept table artifact
ARTIFACT_COLUMNS = (
    "concept_id",
    "status",
    "token",
    "image_similarity",
    "text_similarity",
    "baseline_image_similarity",
    "inversion_lift",
    "final_loss",
    "error",
)


def publish_run_outputs(
    out: str,
    run_id: str,
    rows: list[MetricsRow],
    compositions: Sequence[CompositionRow] = (),
    published: Mapping[str, frozenset[str]] | None = None,
    unwritten: list[MetricsRow] | None = None,
) -> dict:
    """Metrics (the rows of ``rows`` not yet written, ``unwritten``, as one Parquet file; all of them when not
    given), embeddings index (reconciled with ``published``, the run's listing of complete
    results), HTML report (with ``compositions``' rows), dashboard, summary and artifacts; returns the run summary.

    Every write is atomic, and the index and dashboard state are compare-and-swap updates: a run killed anywhere
    in here leaves whole objects, overlapping runs both keep their concepts, and the next run of the catalog
    (even one with nothing to learn) puts the index right from the published results."""
    from reports.dashboard import refresh_dashboard
    from reports.run_page import write_report

    # 1. the rows no chunk wrote, and the embeddings index
    # Prefect need not walk thousands of rows, nor the listing
    metrics_uri = write_metrics(out, passed_whole(rows), passed_whole(published), passed_whole(unwritten))
    # 2. the pages people read
    dict_rows = [r.to_dict() for r in rows]
    report_uri = write_report(out, run_id, dict_rows, [c.to_dict() for c in compositions])
    refresh_dashboard(out, dict_rows, get_run_logger())
    # 3. the summary
    counts: dict[str, int] = {status: sum(r.status == status for r in rows) for status in STATUSES}
    lifts = [r.inversion_lift for r in rows if r.status == "ok" and r.inversion_lift is not None]
    relearned = relearn_summary(r.relearn_reason for r in rows)
    summary = dict(
        run_id=run_id,
        out=out,
        counts=counts,
        metrics_uri=metrics_uri,
        report_uri=report_uri,
        mean_inversion_lift=sum(lifts) / len(lifts) if lifts else None,
        relearned=relearned,
        failed={r.concept_id: r.error for r in rows if r.status == "failed"},
        compositions={c.composition_id: c.status for c in compositions},
    )
    open_store(out).put(f"runs/{run_id}/summary.json", json.dumps(summary, indent=2, default=str).encode())
    # 4. the Prefect artifacts
    _create_artifacts(run_id, rows, counts, report_uri, relearned)
    return summary


def _create_artifacts(
    run_id: str, rows: list[MetricsRow], counts: dict[str, int], report_uri: str, relearned: str
) -> None:
    """A table and a markdown summary of what this run did; skipped concepts (thousands on a quiet
    night) are only counted."""
    done = [r for r in rows if r.status != "skipped"]
    table = [{k: r.to_dict()[k] for k in ARTIFACT_COLUMNS} for r in done]
    create_table_artifact(table=table, key="sstar-run-concepts", description=f"sstar run {run_id}")
    lines = [
        f"# sstar run {run_id}",
        "",
        f"ok {counts['ok']} · failed {counts['failed']} · skipped {counts['skipped']}",
        "",
        *([f"Learned because: {relearned}", ""] if relearned else []),
        f"Report: {report_uri}",
        "",
        "| concept | status | lift | grid |",
        "|---|---|---|---|",
    ]
    for r in done:
        lift = f"{r.inversion_lift:+.3f}" if r.inversion_lift is not None else "—"
        grid = f"[grid]({r.grid_uri})" if r.grid_uri else (r.error or "—").replace("|", "/")[:120]
        lines.append(f"| {r.concept_id} | {r.status} | {lift} | {grid} |")
    create_markdown_artifact(markdown="\n".join(lines), key="sstar-run-summary", description=f"sstar run {run_id}")
