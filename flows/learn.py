"""The workflow DAGs: ``learn_catalog`` (the scheduled, catalog-wide job) and ``learn_concept`` (ad hoc).

learn_catalog: preflight (catalog and model; after the scan, the scoring CLIP when anything is to be
learned and the output: fail in seconds, before any training) → scan the catalog's listings → skip
concepts whose digest already has a complete result (one listing of ``<out>/embeddings/``) → learn the
rest in chunks (:mod:`flows.learn_local`): stage a chunk (a concept changed since the last scan reads its
images here, once, and is skipped after all when identical bytes were re-uploaded) → invert (packs of
``concepts_per_batch``; GPU work under a global concurrency limit) as soon as it is staged → render and
score against the words-only baseline → publish the chunk write-once with its metrics rows. In
deployment mode each pack is a flow run of a ``learn-pack`` deployment instead (:mod:`flows.learn_pack`).
Then the remaining rows (skipped, unusable), the embeddings index, the HTML report and Prefect artifacts.
One bad concept never stops the others; the flow ends Failed (and ``sstar learn`` exits 1) when any
concept failed.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from flows.compositions import compose_catalog
from flows.learn_local import ConceptsFailed, LearnContext, fan_out_threads, learn_locally
from flows.learn_pack import learn_on_deployment
from flows.run_outputs import publish_run_outputs
from flows.sync import passed_whole, sync_result
from inversion.cancel import check_stop
from storage.metrics import MetricsRow, read_embeddings_index
from storage.results import ResultStore
from storage.store.open import open_store
from tasks.concurrency import ensure_gpu_limit
from tasks.ingest import ScanResult, remember_scan, scan_catalog
from tasks.preflight import check_inputs, check_outputs, preflight
from tasks.publish import failed_row, row_to_json, rows_key, skipped_row, write_metrics
from tasks.records import ConceptRecord
from tasks.settings import EvalSettings, LearnSettings, RunSettings

__all__ = ["ConceptsFailed", "fan_out_threads", "learn_catalog", "learn_concept", "new_run_id"]


def new_run_id() -> str:
    """``YYYYmmddTHHMMSS-<flow run id prefix>``: sortable and unique."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    run = str(flow_run.get_id() or uuid.uuid4().hex)[:8]
    return f"{stamp}-{run}"


def _rows_without_learning(
    scan: ScanResult, index: Mapping[str, dict], run_id: str, learn: LearnSettings, out: str
) -> tuple[list[MetricsRow], list[ConceptRecord]]:
    """A ``failed`` row per unusable concept and a ``skipped`` row (scores from ``index``, the embeddings
    index by concept) per concept whose digest has a complete result; and the concepts left to learn."""
    rows = [failed_row(run_id, cid, reason, learn) for cid, reason in scan.unusable]
    done = scan.done  # from one paginated listing of <out>/embeddings/, not a request per concept
    todo = []
    for record in scan.records:
        if record.digest is not None and record.digest in done.get(record.concept_id, ()):
            rows.append(skipped_row(run_id, record, learn, out, index.get(record.concept_id)))
        else:
            todo.append(record)
    return rows, todo


class _Progress:
    """Counts the run's finished concepts into its progress artifact and its log (the ``on_done`` of the learners)."""

    #: the least seconds between two updates of the progress artifact: each is a database write on the
    #: Prefect server, and a first night finishes several concepts a second (every line still goes to the log)
    UPDATE_EVERY_S = 2.0

    def __init__(self, run_id: str, total: int, logger) -> None:
        self.total, self.logger, self.finished = total, logger, 0
        self.updated = time.monotonic()
        self.artifact = sync_result(
            create_progress_artifact(
                progress=0.0, key="sstar-run-progress", description=f"concepts finished in run {run_id}"
            )
        )

    def __call__(self, row: MetricsRow) -> None:
        self.finished += 1
        if self.finished == self.total or time.monotonic() - self.updated >= self.UPDATE_EVERY_S:
            update_progress_artifact(self.artifact, 100.0 * self.finished / max(1, self.total))
            self.updated = time.monotonic()
        self.logger.info("[%d/%d] %s: %s", self.finished, self.total, row.concept_id, row.status)

    def complete(self) -> None:
        update_progress_artifact(self.artifact, 100.0)


# The decorators' runners are fixed at import; the flows submit their tasks to a runner of run.workers
# threads instead (see flows.learn_local.learn_locally), so these only set a small default. The type ignores:
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
    # 1. the catalog and model are usable; scan the catalog's listings
    check_inputs(catalog, learn)
    ensure_gpu_limit(run.gpu_limit_name, run.max_concurrent_inversions, update=False)
    scan = scan_catalog(catalog, learn, out_uri=out)
    # 2. unusable concepts fail; those whose digest has a complete result are skipped
    index = {r["concept_id"]: r for r in read_embeddings_index(out).to_pylist()}
    rows, todo = _rows_without_learning(scan, index, run_id, learn, out)
    logger.info(
        "run %s: %d to stage (%d changed since the last scan), %d already done, %d unusable",
        run_id,
        len(todo),
        sum(r.digest is None for r in todo),
        len(scan.records) - len(todo),
        len(scan.unusable),
    )
    check_outputs(out, evaluation if todo and not run.deployment else None, run)  # before any training
    # 3. learn the rest: here in chunks, or each pack as a flow run of the deployment
    progress = _Progress(run_id, len(todo), logger)
    work_root = run.work_dir or tempfile.mkdtemp(prefix="sstar-work-")
    records = {r.concept_id: r for r in scan.records}
    try:
        if run.deployment:
            learned = learn_on_deployment(catalog, out, todo, learn, evaluation, run, run_id, progress)
        else:
            ctx = LearnContext(catalog, out, learn, evaluation, run, run_id, work_root)
            learned = learn_locally(ctx, todo, progress, scan.done, index)
            records.update(learned.records)  # digests and images as read
        check_stop()  # a stopped run writes no more rows: finished chunks are written, the rest keep their checkpoints
    finally:
        if not run.work_dir:
            shutil.rmtree(work_root, ignore_errors=True)
    # 4. remember the scan (passed whole, not walked: it has one entry per concept), compose, report
    remember_scan(out, passed_whole(scan.state.merged(learned.scans)), passed_whole(scan.previous))
    progress.complete()
    unwritten = rows + learned.unwritten  # the rows no chunk or pack wrote
    rows += learned.rows
    compositions = compose_catalog(catalog, out, run_id, rows, records, learn, evaluation, run)
    summary = publish_run_outputs(out, run_id, rows, compositions, scan.done, unwritten)
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
    work_root = run.work_dir or tempfile.mkdtemp(prefix="sstar-work-")
    try:
        if record is None:
            reason = dict(scan.unusable).get(concept_id, f"no concept {concept_id!r} in {catalog}")
            rows, unwritten, concept_scan = [failed_row(run_id, concept_id, reason, learn)], None, None
        else:
            local = run.model_copy(update={"deployment": None})
            ctx = LearnContext(catalog, out, learn, evaluation, local, run_id, work_root)
            learned = learn_locally(ctx, [record], lambda row: None, done, append=not parent_run_id)
            rows, unwritten, concept_scan = learned.rows, learned.unwritten, learned.scans.get(concept_id)
    finally:
        if not run.work_dir:
            shutil.rmtree(work_root, ignore_errors=True)
    (row,) = rows
    if parent_run_id:
        open_store(out).put(rows_key(run_id, concept_id), row_to_json(row, concept_scan))
    else:  # the row (unless its chunk wrote it), and the index reconciled with this concept's results
        published = ResultStore.open(out).completed(concept_id)
        write_metrics(out, rows, published, unwritten)
    if row.status == "failed":
        raise ConceptsFailed(f"{concept_id} failed: {row.error}")
    return row.to_dict()
