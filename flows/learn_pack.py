"""Deployment mode: a catalog run fans its concepts out one pack per flow run of a ``learn-pack`` deployment.

The coordinator (``learn_catalog`` with ``run.deployment``) splits the concepts to learn into packs of
``concepts_per_batch`` and runs each pack as a flow run of :func:`learn_pack` on any worker, where the pack is
staged, trained in one batch, scored and published (:func:`flows.learn_local.learn_locally`). A flow run that
died is run again on another worker (:mod:`flows.child_runs`; its concepts resume from their checkpoints). The
pack leaves one row per concept under ``runs/<run_id>/rows/`` (:func:`tasks.publish.rows_key`), with what the
scan state may remember of the images it read; the coordinator collects them and writes the pack's metrics rows
at once, so a killed night keeps the rows of every pack that finished.
"""

from __future__ import annotations

import queue
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

from flows.child_runs import ChildRules, ChildWaitError, run_child
from flows.learn_local import ConceptsFailed, LearnContext, LocalResult, chunks, fan_out_threads, learn_locally
from flows.stopping import stop_tasks_on_interrupt
from inversion.cancel import check_stop
from storage.metrics import MetricsRow
from storage.results import ResultStore
from storage.scanstate import ConceptState
from storage.store.open import open_store
from tasks.ingest import scan_catalog
from tasks.preflight import preflight
from tasks.publish import append_rows, failed_row, row_from_json, row_to_json, rows_key, scan_from_json
from tasks.records import ConceptRecord, with_relearn_reason
from tasks.settings import EvalSettings, LearnSettings, RunSettings


@flow(name="learn-pack", task_runner=ThreadPoolTaskRunner(max_workers=2), log_prints=True)  # type: ignore[arg-type]  # prefect#16938
def learn_pack(
    catalog: str,
    concept_ids: list[str],
    out: str,
    learn: LearnSettings,
    evaluation: EvalSettings,
    run: RunSettings,
    parent_run_id: str,
) -> dict[str, str]:
    """Learn the concepts ``concept_ids`` of ``catalog`` together (one pack on this worker) for the catalog run
    ``parent_run_id``, skipping a concept whose content already has a complete result; leave each concept's
    row for that run (:func:`tasks.publish.rows_key`). Returns each concept's status; ends Failed when one
    failed."""
    preflight(catalog, out, learn, evaluation, run)
    scan = scan_catalog(catalog, learn, concept_ids)  # lists these concepts' folders only
    found = {r.concept_id: r for r in scan.records}
    results = ResultStore.open(out)
    done = {cid: results.completed(cid).get(cid, frozenset()) for cid in found}
    unusable = dict(scan.unusable)
    rows = [
        failed_row(parent_run_id, cid, unusable.get(cid, f"no concept {cid!r} in {catalog}"), learn)
        for cid in concept_ids
        if cid not in found
    ]
    work_root = run.work_dir or tempfile.mkdtemp(prefix="sstar-work-")
    try:
        # one pack on this worker's GPU: trained as one batch, not split into max_concurrent_inversions queues
        # (that setting is the catalog's fan-out: the coordinator's flow runs in flight)
        on_worker = run.model_copy(update={"deployment": None, "max_concurrent_inversions": 1})
        ctx = LearnContext(catalog, out, learn, evaluation, on_worker, parent_run_id, work_root)
        learned = learn_locally(ctx, list(found.values()), lambda row: None, done, append=False)
    finally:
        if not run.work_dir:
            shutil.rmtree(work_root, ignore_errors=True)
    store = open_store(out)
    for row in [*rows, *learned.rows]:
        store.put(rows_key(parent_run_id, row.concept_id), row_to_json(row, learned.scans.get(row.concept_id)))
    statuses: dict[str, str] = {row.concept_id: row.status for row in [*rows, *learned.rows]}
    failed = sorted(cid for cid, status in statuses.items() if status == "failed")
    if failed:
        raise ConceptsFailed(f"{len(failed)} concept(s) failed: {', '.join(failed)}")
    return statuses


#: no Prefect retries: :func:`flows.child_runs.run_child` runs a dead child again itself, and a retry of this
#: task would start a second flow run beside one that may still be running
@task(name="run-pack-deployment", retries=0)
def run_pack_deployment(
    deployment: str,
    catalog: str,
    out: str,
    records: list[ConceptRecord],
    learn: LearnSettings,
    evaluation: EvalSettings,
    run: RunSettings,
    run_id: str,
) -> list[tuple[MetricsRow, ConceptState | None]]:
    """Run :func:`learn_pack` for ``records`` as a flow run of ``deployment`` (on any worker; run again on
    another when it dies, :mod:`flows.child_runs`), collect the rows it left in the output store, with what
    it learned for the scan state, and append them to the metrics (one write-once file)."""
    ids = [r.concept_id for r in records]
    parameters = dict(
        catalog=catalog,
        concept_ids=ids,
        out=out,
        learn=learn.model_dump(),
        evaluation=evaluation.model_dump(),
        run=run.model_dump(exclude={"deployment"}),
        parent_run_id=run_id,
    )
    store = open_store(out)
    rules = ChildRules(heartbeat_timeout=run.child_heartbeat_timeout, wait_timeout=run.child_wait_timeout)
    left = lambda: all(store.exists(rows_key(run_id, cid)) for cid in ids)  # noqa: E731
    what = f"pack {ids[0]}…{ids[-1]}" if len(ids) > 1 else f"concept {ids[0]}"
    try:
        child = run_child(deployment, parameters, rules, what, left)
        why = f"flow run {child.name} ended {child.state_name}: {child.state.message if child.state else 'no state'}"
    except ChildWaitError as exc:
        why = str(exc)
    collected = [_collected(store, run_id, record, learn, why) for record in records]
    append_rows(out, [row for row, _ in collected])
    return collected


def _collected(
    store: Any, run_id: str, record: ConceptRecord, learn: LearnSettings, why: str
) -> tuple[MetricsRow, ConceptState | None]:
    """The row a pack left for ``record`` and its scan entry; a ``failed`` row saying ``why`` when it left none."""
    try:
        raw = store.get(rows_key(run_id, record.concept_id))
    except Exception:  # noqa: BLE001 - the child crashed, or never ran, before writing its row
        return failed_row(run_id, record.concept_id, why, learn, record), None
    return with_relearn_reason(row_from_json(raw), record), scan_from_json(raw)  # the child scanned without state


def learn_on_deployment(
    catalog: str,
    out: str,
    todo: list[ConceptRecord],
    learn: LearnSettings,
    evaluation: EvalSettings,
    run: RunSettings,
    run_id: str,
    on_done: Callable[[MetricsRow], None],
) -> LocalResult:
    """Each pack of ``todo`` as a flow run of ``run.deployment``, ``fan_out_threads(run)`` at a time (and no more
    packs submitted than twice that: the futures held do not grow with the catalog); returns their rows (those
    of a pack whose task failed come back ``unwritten``) and what they learned for the scan state."""
    result = LocalResult()
    threads = fan_out_threads(run)
    finished: queue.SimpleQueue[Any] = queue.SimpleQueue()
    in_flight: dict[Any, list[ConceptRecord]] = {}
    packs = iter(chunks(todo, run.concepts_per_batch))
    with ThreadPoolTaskRunner[Any](max_workers=threads) as runner, stop_tasks_on_interrupt():
        while True:
            while len(in_flight) < 2 * threads and (pack := next(packs, None)) is not None:
                check_stop()  # no child starts once the run was asked to stop (flows.stopping)
                parameters = dict(
                    deployment=run.deployment,
                    catalog=catalog,
                    out=out,
                    records=pack,
                    learn=learn,
                    evaluation=evaluation,
                    run=run,
                    run_id=run_id,
                )
                future = runner.submit(run_pack_deployment, parameters)
                in_flight[future] = pack
                future.add_done_callback(finished.put)
            if not in_flight:
                return result
            future = _next_finished(finished)
            _collect(result, in_flight.pop(future), future.result(raise_on_failure=False), run_id, learn, on_done)


def _next_finished(finished: queue.SimpleQueue[Any]) -> Any:
    """The next finished future; checks for a stop request at least every second."""
    while True:
        check_stop()
        try:
            return finished.get(timeout=1.0)
        except queue.Empty:
            continue


def _collect(
    result: LocalResult,
    pack: list[ConceptRecord],
    collected: Any,
    run_id: str,
    learn: LearnSettings,
    on_done: Callable[[MetricsRow], None],
) -> None:
    """Add a pack's rows and scan entries to ``result``; a pack task that raised fails its concepts (rows not
    yet written)."""
    if isinstance(collected, BaseException):
        collected = [(failed_row(run_id, r.concept_id, str(collected), learn, r), None) for r in pack]
        result.unwritten += [row for row, _ in collected]
    for row, concept_scan in collected:
        if concept_scan is not None:
            result.scans[row.concept_id] = concept_scan
        result.rows.append(row)
        on_done(row)
