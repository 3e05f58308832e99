"""The workflow DAGs: ``learn_catalog`` (the scheduled, catalog-wide job) and ``learn_concept`` (ad hoc).

learn_catalog: preflight (catalog and model; after the scan, the scoring CLIP when anything is to be
learned and the output: fail in seconds, before any training) → scan the catalog's listings → skip
concepts whose digest already has a complete result (one listing of ``<out>/embeddings/``) → stage
images (a concept changed since the last scan reads its images here, once, and is skipped after all
when identical bytes were re-uploaded) → invert (packs of ``concepts_per_batch``; GPU work under a
global concurrency limit) → render and score against the words-only baseline → publish write-once →
append the run's metrics once, refresh the embeddings index, write the HTML report and Prefect
artifacts. One bad concept never stops the others; the flow ends Failed (and ``sstar learn`` exits
1) when any concept failed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from flows.compositions import compose_catalog
from flows.sync import passed_whole, sync_result
from storage.metrics import MetricsRow, read_embeddings_index
from storage.results import ResultStore
from storage.scanstate import ConceptState
from storage.store.open import open_store
from tasks.concurrency import ensure_gpu_limit
from tasks.ingest import remember_scan, scan_catalog, stage_concept
from tasks.invert import invert_pack
from tasks.preflight import check_inputs, check_outputs, preflight
from tasks.publish import (
    failed_row,
    publish_concept,
    row_from_json,
    row_to_json,
    rows_key,
    scan_from_json,
    skipped_row,
    write_metrics,
)
from tasks.records import ConceptRecord, InversionOutcome, StagedConcept
from tasks.score import score_outcomes_task
from tasks.settings import EvalSettings, LearnSettings, RunSettings


class ConceptsFailed(RuntimeError):
    """Raised at the very end of a run in which some concept failed (everything else was written)."""


def new_run_id() -> str:
    """``YYYYmmddTHHMMSS-<flow run id prefix>``: sortable and unique."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    run = str(flow_run.get_id() or uuid.uuid4().hex)[:8]
    return f"{stamp}-{run}"


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


#: concepts per inversion task, in packs of ``concepts_per_batch``: a longer queue keeps a continuous
#: pack full for longer (stopped concepts hand their slots on); a shorter one starts scoring sooner
#: and bounds what a retried task re-runs
QUEUE_PACKS = 8


def inversion_queues(concepts: list, run: RunSettings) -> list[list]:
    """Split the concepts to learn into the queues of the inversion tasks: one per GPU slot
    (``max_concurrent_inversions``), each at most :data:`QUEUE_PACKS` packs long."""
    longest = run.concepts_per_batch * QUEUE_PACKS
    per_slot = -(-len(concepts) // run.max_concurrent_inversions) if concepts else 1
    return _chunks(concepts, max(1, min(longest, per_slot)))


def fan_out_threads(run: RunSettings) -> int:
    """Threads running this flow run's tasks: ``run.workers``; when concepts go to a deployment, at
    least the GPU slots, since each thread waits on one child flow run."""
    return max(run.workers, run.max_concurrent_inversions) if run.deployment else run.workers


def _submit(runner: ThreadPoolTaskRunner[Any], task_, **parameters):
    return runner.submit(task_, parameters)


def _learn_locally(
    catalog: str,
    out: str,
    todo: list[ConceptRecord],
    learn: LearnSettings,
    evaluation: EvalSettings,
    run: RunSettings,
    run_id: str,
    work_root: str,
    on_done,
    done: Mapping[str, frozenset[str]],
    index: Mapping[str, dict] | None = None,
) -> tuple[list[MetricsRow], list[StagedConcept]]:
    """Stage → invert (packed) → score → publish, fanned out on ``run.workers`` threads.

    ``done`` maps concept ids to digests with a complete result: a concept whose staging finds its
    digest there (identical bytes re-uploaded) becomes a ``skipped`` row (scores from ``index``, the
    embeddings index by concept) instead of being learned. Returns the rows and every staged concept.

    The threads are this run's own task runner rather than the flow decorator's, so that the
    ``workers`` parameter holds in deployments too (a flow's decorator runner is fixed at import).
    """
    with ThreadPoolTaskRunner[Any](max_workers=fan_out_threads(run)) as runner:
        rows: list[MetricsRow] = []
        staged: list[StagedConcept] = []
        for record, future in [
            (
                r,
                _submit(
                    runner,
                    stage_concept,
                    catalog_uri=catalog,
                    record=r,
                    work_root=work_root,
                    done_digests=sorted(done.get(r.concept_id, ())),
                ),
            )
            for r in todo
        ]:
            result = future.result(raise_on_failure=False)
            if isinstance(result, BaseException):
                result = StagedConcept(record, "", "", 0, error=f"ingest failed: {result}")
            staged.append(result)
        for s in staged:
            if s.done:
                row = skipped_row(run_id, s.record, learn, out, (index or {}).get(s.record.concept_id))
                rows.append(row)
                on_done(row)
        learning = [s for s in staged if not s.done]
        invert_futures = {
            _submit(runner, invert_pack, staged=pack, learn=learn, run=run, out_uri=out): pack
            for pack in inversion_queues(learning, run)
        }
        score_futures = {}
        for future in as_completed(list(invert_futures)):
            outcomes = future.result(raise_on_failure=False)
            if isinstance(outcomes, BaseException):
                outcomes = [
                    InversionOutcome(s, None, error=f"inversion failed: {outcomes}") for s in invert_futures[future]
                ]
            for pack in _chunks(outcomes, run.concepts_per_batch):  # one batched rendering per pack
                score_futures[
                    _submit(
                        runner,
                        score_outcomes_task,
                        outcomes=pack,
                        learn=learn,
                        evaluation=evaluation,
                        run=run,
                        out_uri=out,
                    )
                ] = pack
        for future in as_completed(list(score_futures)):
            results = future.result(raise_on_failure=False)
            for i, outcome in enumerate(score_futures[future]):
                record = outcome.staged.record
                if isinstance(results, BaseException):
                    row = failed_row(run_id, record.concept_id, f"scoring failed: {results}", learn, record)
                else:
                    row = _submit(
                        runner, publish_concept, scored=results[i], out_uri=out, run_id=run_id, learn=learn
                    ).result(raise_on_failure=False)
                    if isinstance(row, BaseException):
                        row = failed_row(run_id, record.concept_id, f"publishing failed: {row}", learn, record)
                rows.append(row)
                on_done(row)
    return rows, staged


@task(name="run-concept-deployment", retries=0)
def run_concept_deployment(
    deployment: str,
    catalog: str,
    out: str,
    record: ConceptRecord,
    learn: LearnSettings,
    evaluation: EvalSettings,
    run: RunSettings,
    run_id: str,
) -> tuple[MetricsRow, ConceptState | None]:
    """Run ``learn_concept`` for one concept as a flow run of ``deployment`` (on any worker) and
    collect the row it left in the output store, with what it learned for the scan state. The
    child skips the concept when its images turn out to have a complete result already."""
    from prefect.deployments import run_deployment

    parameters = dict(
        catalog=catalog,
        concept_id=record.concept_id,
        out=out,
        learn=learn.model_dump(),
        evaluation=evaluation.model_dump(),
        run=run.model_dump(exclude={"deployment"}),
        parent_run_id=run_id,
        skip_complete=True,
    )
    child = sync_result(run_deployment(name=deployment, parameters=parameters, timeout=None, as_subflow=True))
    try:
        raw = open_store(out).get(rows_key(run_id, record.concept_id))
        return row_from_json(raw), scan_from_json(raw)
    except Exception:  # noqa: BLE001 - the child crashed before writing its row
        message = child.state.message if child.state else "no state"
        return failed_row(
            run_id, record.concept_id, f"flow run {child.name} ended {child.state_name}: {message}", learn, record
        ), None


def _publish_run_outputs(out: str, run_id: str, rows: list[MetricsRow], compositions: list | None = None) -> dict:
    """Metrics (one Parquet file), embeddings index, HTML report (with ``compositions``' rows), dashboard,
    artifacts; returns the run summary."""
    from reports.dashboard import refresh_dashboard
    from reports.run_page import write_report

    metrics_uri = write_metrics(out, passed_whole(rows))  # Prefect need not walk thousands of rows
    store = open_store(out)
    dict_rows = [r.to_dict() for r in rows]
    report_uri = write_report(out, run_id, dict_rows, [c.to_dict() for c in compositions or ()])
    refresh_dashboard(out, dict_rows, get_run_logger())
    counts = {status: sum(r.status == status for r in rows) for status in ("ok", "failed", "skipped")}
    lifts = [r.inversion_lift for r in rows if r.status == "ok" and r.inversion_lift is not None]
    summary = dict(
        run_id=run_id,
        out=out,
        counts=counts,
        metrics_uri=metrics_uri,
        report_uri=report_uri,
        mean_inversion_lift=sum(lifts) / len(lifts) if lifts else None,
        failed={r.concept_id: r.error for r in rows if r.status == "failed"},
        compositions={c.composition_id: c.status for c in compositions or ()},
    )
    store.put(f"runs/{run_id}/summary.json", json.dumps(summary, indent=2, default=str).encode())
    # artifacts list what this run did; skipped concepts (thousands on a quiet night) are only counted
    table = [
        {
            k: d[k]
            for k in (
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
        }
        for d in dict_rows
        if d["status"] != "skipped"
    ]
    create_table_artifact(table=table, key="sstar-run-concepts", description=f"sstar run {run_id}")
    lines = [
        f"# sstar run {run_id}",
        "",
        f"ok {counts['ok']} · failed {counts['failed']} · skipped {counts['skipped']}",
        "",
        f"Report: {report_uri}",
        "",
        "| concept | status | lift | grid |",
        "|---|---|---|---|",
    ]
    for r in (r for r in rows if r.status != "skipped"):
        lift = f"{r.inversion_lift:+.3f}" if r.inversion_lift is not None else "—"
        grid = f"[grid]({r.grid_uri})" if r.grid_uri else (r.error or "—").replace("|", "/")[:120]
        lines.append(f"| {r.concept_id} | {r.status} | {lift} | {grid} |")
    create_markdown_artifact(markdown="\n".join(lines), key="sstar-run-summary", description=f"sstar run {run_id}")
    return summary


# The decorators' runners are fixed at import; the flows submit their tasks to a runner of
# run.workers threads instead (see _learn_locally), so these only set a small default. The type ignores:
# Prefect's own ThreadPoolTaskRunner does not match its task_runner annotation (PrefectHQ/prefect#16938).
@flow(name="learn-catalog", task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=True)  # type: ignore[arg-type]  # prefect#16938
def learn_catalog(
    catalog: str,
    out: str,
    learn: LearnSettings,
    evaluation: EvalSettings = EvalSettings(),
    run: RunSettings = RunSettings(),
    run_id: str | None = None,
) -> dict:
    """Learn every new or changed concept of ``catalog``; write embeddings, grids, metrics and a report to ``out``."""
    logger = get_run_logger()
    run_id = run_id or new_run_id()
    check_inputs(catalog, learn)
    ensure_gpu_limit(run.gpu_limit_name, run.max_concurrent_inversions, update=False)
    scan = scan_catalog(catalog, learn, out_uri=out)
    unusable = scan.unusable
    rows: list[MetricsRow] = [failed_row(run_id, cid, reason, learn) for cid, reason in unusable]
    done = scan.done  # from one paginated listing of <out>/embeddings/, not a request per concept
    index = {r["concept_id"]: r for r in read_embeddings_index(out).to_pylist()}
    todo = []
    for record in scan.records:
        if record.digest is not None and record.digest in done.get(record.concept_id, ()):
            rows.append(skipped_row(run_id, record, learn, out, index.get(record.concept_id)))
        else:
            todo.append(record)
    logger.info(
        "run %s: %d to stage (%d changed since the last scan), %d already done, %d unusable",
        run_id,
        len(todo),
        sum(r.digest is None for r in todo),
        len(scan.records) - len(todo),
        len(unusable),
    )
    check_outputs(out, evaluation if todo and not run.deployment else None, run)  # before any training
    progress_id = sync_result(
        create_progress_artifact(
            progress=0.0, key="sstar-run-progress", description=f"concepts finished in run {run_id}"
        )
    )
    finished = [0]

    def on_done(row: MetricsRow) -> None:
        finished[0] += 1
        update_progress_artifact(progress_id, 100.0 * finished[0] / max(1, len(todo)))
        logger.info("[%d/%d] %s: %s", finished[0], len(todo), row.concept_id, row.status)

    work_root = run.work_dir or tempfile.mkdtemp(prefix="sstar-work-")
    learned: dict[str, ConceptState] = {}
    records = {r.concept_id: r for r in scan.records}
    try:
        if run.deployment:
            with ThreadPoolTaskRunner[Any](max_workers=fan_out_threads(run)) as runner:
                futures = {
                    _submit(
                        runner,
                        run_concept_deployment,
                        deployment=run.deployment,
                        catalog=catalog,
                        out=out,
                        record=r,
                        learn=learn,
                        evaluation=evaluation,
                        run=run,
                        run_id=run_id,
                    ): r
                    for r in todo
                }
                for future in as_completed(list(futures)):
                    result = future.result(raise_on_failure=False)
                    if isinstance(result, BaseException):
                        row = failed_row(run_id, futures[future].concept_id, str(result), learn, futures[future])
                    else:
                        row, concept_scan = result
                        if concept_scan is not None:
                            learned[row.concept_id] = concept_scan
                    rows.append(row)
                    on_done(row)
        else:
            new_rows, staged = _learn_locally(
                catalog, out, todo, learn, evaluation, run, run_id, work_root, on_done, done, index
            )
            rows += new_rows
            learned.update({s.record.concept_id: s.scan for s in staged if s.scan is not None})
            records.update({s.record.concept_id: s.record for s in staged})  # digests and images as read
    finally:
        if not run.work_dir:
            shutil.rmtree(work_root, ignore_errors=True)
    # passed whole, not walked: the scan state has one entry per concept
    remember_scan(out, passed_whole(scan.state.merged(learned)), passed_whole(scan.previous))
    update_progress_artifact(progress_id, 100.0)
    compositions = compose_catalog(catalog, out, run_id, rows, records, learn, evaluation, run)
    summary = _publish_run_outputs(out, run_id, rows, compositions)
    logger.info("run %s done: %s; report %s", run_id, summary["counts"], summary["report_uri"])
    if summary["counts"]["failed"]:
        failed = ", ".join(sorted(summary["failed"]))
        raise ConceptsFailed(
            f"{summary['counts']['failed']} concept(s) failed: {failed} (report: {summary['report_uri']})"
        )
    return summary


@flow(name="learn-concept", task_runner=ThreadPoolTaskRunner(max_workers=2), log_prints=True)  # type: ignore[arg-type]  # prefect#16938
def learn_concept(
    catalog: str,
    concept_id: str,
    out: str,
    learn: LearnSettings,
    evaluation: EvalSettings = EvalSettings(),
    run: RunSettings = RunSettings(),
    parent_run_id: str | None = None,
    skip_complete: bool = False,
) -> dict:
    """Learn one concept of ``catalog`` now, whether or not it was learned before (unless
    ``skip_complete``: then a concept whose content already has a complete result is skipped).

    Launched by ``learn_catalog`` (``parent_run_id`` set) it leaves its metrics row for the parent;
    run ad hoc it appends the row to the metrics itself.
    """
    run_id = parent_run_id or new_run_id()
    preflight(catalog, out, learn, evaluation, run)
    scan = scan_catalog(catalog, learn, [concept_id])  # lists this concept's folder only
    record = next((r for r in scan.records if r.concept_id == concept_id), None)
    done = ResultStore.open(out).completed(concept_id) if skip_complete else {}
    concept_scan = None
    work_root = run.work_dir or tempfile.mkdtemp(prefix="sstar-work-")
    try:
        if record is None:
            reason = dict(scan.unusable).get(concept_id, f"no concept {concept_id!r} in {catalog}")
            rows = [failed_row(run_id, concept_id, reason, learn)]
        else:
            rows, staged = _learn_locally(
                catalog,
                out,
                [record],
                learn,
                evaluation,
                run.model_copy(update={"deployment": None}),
                run_id,
                work_root,
                on_done=lambda row: None,
                done=done,
            )
            concept_scan = staged[0].scan
    finally:
        if not run.work_dir:
            shutil.rmtree(work_root, ignore_errors=True)
    (row,) = rows
    if parent_run_id:
        open_store(out).put(rows_key(run_id, concept_id), row_to_json(row, concept_scan))
    else:
        write_metrics(out, rows)
    if row.status == "failed":
        raise ConceptsFailed(f"{concept_id} failed: {row.error}")
    return row.to_dict()
