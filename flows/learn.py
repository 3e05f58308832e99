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

import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from flows.child_runs import ChildRules, ChildWaitError, run_child
from flows.compositions import compose_catalog
from flows.run_outputs import publish_run_outputs
from flows.stopping import stop_tasks_on_interrupt
from flows.sync import passed_whole, sync_result
from inversion.cancel import check_stop
from storage.metrics import MetricsRow, read_embeddings_index
from storage.results import ResultStore
from storage.scanstate import ConceptState
from storage.store.open import open_store
from tasks.claims import CLAIM_TTL_S, Claim, Claims, claim_key
from tasks.concurrency import ensure_gpu_limit
from tasks.ingest import ScanResult, remember_scan, scan_catalog, stage_concept
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
    check_stop()  # no task starts once the run was asked to stop (flows.stopping)
    return runner.submit(task_, parameters)


def _stage(
    runner: ThreadPoolTaskRunner[Any],
    catalog: str,
    todo: list[ConceptRecord],
    work_root: str,
    done: Mapping[str, frozenset[str]],
) -> list[StagedConcept]:
    """Stage every concept of ``todo``; a staging that raised comes back as a concept with its error."""
    futures = [
        (
            record,
            _submit(
                runner,
                stage_concept,
                catalog_uri=catalog,
                record=record,
                work_root=work_root,
                done_digests=sorted(done.get(record.concept_id, ())),
            ),
        )
        for record in todo
    ]
    staged = []
    for record, future in futures:
        result = future.result(raise_on_failure=False)
        if isinstance(result, BaseException):
            result = StagedConcept(record, "", "", 0, error=f"ingest failed: {result}")
        staged.append(result)
    return staged


def _invert_and_score(
    runner: ThreadPoolTaskRunner[Any],
    learning: list[StagedConcept],
    learn: LearnSettings,
    evaluation: EvalSettings,
    run: RunSettings,
    out: str,
) -> dict[Any, list[InversionOutcome]]:
    """Invert the concepts in queues, and score each finished queue pack by pack; returns the scoring
    futures with the outcomes each scores (an inversion that raised fails its queue's concepts)."""
    invert_futures = {
        _submit(runner, invert_pack, staged=queue, learn=learn, run=run, out_uri=out): queue
        for queue in inversion_queues(learning, run)
    }
    score_futures = {}
    for future in as_completed(list(invert_futures)):
        outcomes = future.result(raise_on_failure=False)
        if isinstance(outcomes, BaseException):
            outcomes = [
                InversionOutcome(s, None, error=f"inversion failed: {outcomes}") for s in invert_futures[future]
            ]
        for pack in _chunks(outcomes, run.concepts_per_batch):  # one batched rendering per pack
            parameters = dict(outcomes=pack, learn=learn, evaluation=evaluation, run=run, out_uri=out)
            score_futures[_submit(runner, score_outcomes_task, **parameters)] = pack
    return score_futures


def _publish_scored(
    runner: ThreadPoolTaskRunner[Any],
    score_futures: dict[Any, list[InversionOutcome]],
    out: str,
    run_id: str,
    learn: LearnSettings,
    on_done: Callable[[MetricsRow], None],
) -> list[MetricsRow]:
    """Publish each scored concept as its pack's scoring finishes; a failure becomes a ``failed`` row."""
    rows = []
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
    return rows


def _learn_locally(
    catalog: str,
    out: str,
    todo: list[ConceptRecord],
    learn: LearnSettings,
    evaluation: EvalSettings,
    run: RunSettings,
    run_id: str,
    work_root: str,
    on_done: Callable[[MetricsRow], None],
    done: Mapping[str, frozenset[str]],
    index: Mapping[str, dict] | None = None,
) -> tuple[list[MetricsRow], list[StagedConcept]]:
    """Stage → invert (packed) → score → publish, fanned out on ``run.workers`` threads.

    ``done`` maps concept ids to digests with a complete result: a concept whose staging finds its
    digest there (identical bytes re-uploaded) becomes a ``skipped`` row (scores from ``index``, the
    embeddings index by concept) instead of being learned. Returns the rows and every staged concept.

    The threads are this run's own task runner rather than the flow decorator's, so that the
    ``workers`` parameter holds in deployments too (a flow's decorator runner is fixed at import).

    A concept is trained under this run's claim on it (:mod:`tasks.claims`): one that another live run is
    training is waited for, and its published result becomes a ``skipped`` row here.
    """
    runner_threads = ThreadPoolTaskRunner[Any](max_workers=fan_out_threads(run))
    with runner_threads as runner, Claims(out, run_id) as claims, stop_tasks_on_interrupt():

        def skip(s: StagedConcept, index_row: dict | None = None) -> MetricsRow:
            row = skipped_row(run_id, s.record, learn, out, index_row)
            on_done(row)
            return row

        def finished(row: MetricsRow) -> None:  # a concept's claim goes as its row is made
            claims.release(row.concept_id, row.digest)
            on_done(row)

        def fail(s: StagedConcept, error: str) -> MetricsRow:
            row = failed_row(run_id, s.record.concept_id, error, learn, s.record)
            finished(row)
            return row

        def learn_now(concepts: list[StagedConcept]) -> list[MetricsRow]:
            score_futures = _invert_and_score(runner, concepts, learn, evaluation, run, out)
            return _publish_scored(runner, score_futures, out, run_id, learn, finished)

        # 1. stage: read each concept's images once, finish its digest, write its PNGs
        staged = _stage(runner, catalog, todo, work_root, done)
        # 2. identical bytes re-uploaded: a complete result exists already; claim the rest (tasks.claims)
        rows = [skip(s, (index or {}).get(s.record.concept_id)) for s in staged if s.done]
        ours, theirs, published = _claim(claims, out, [s for s in staged if not s.done])
        rows += [skip(s) for s in published]
        # 3. invert in queues, score each pack as its queue finishes, publish each scored concept
        rows += learn_now(ours)
        # 4. the concepts other runs were training: their results, or learned here once their claim is gone
        rows += _after_other_runs(claims, out, theirs, learn_now, skip, fail, run.slot_wait_timeout)
    return rows, staged


#: seconds between looks at the claims and results of the concepts other runs are training
CLAIM_POLL_S = 2.0


def _claim(
    claims: Claims, out: str, staged: list[StagedConcept]
) -> tuple[list[StagedConcept], list[StagedConcept], list[StagedConcept]]:
    """Split the concepts to learn: those this run claimed (and those whose staging failed: nothing to claim),
    those another live run holds, and those another run published after the scan."""
    results = ResultStore.open(out)
    ours, theirs, published = [], [], []
    for s in staged:
        if s.error is not None:
            ours.append(s)
            continue
        concept_id, digest = s.record.concept_id, s.record.known_digest()
        if claims.take(concept_id, digest) is not None:
            theirs.append(s)
        elif results.is_complete(concept_id, digest):  # published and let go between the scan and the claim
            claims.release(concept_id, digest)
            published.append(s)
        else:
            ours.append(s)
    return ours, theirs, published


def _after_other_runs(
    claims: Claims,
    out: str,
    waiting: list[StagedConcept],
    learn_now: Callable[[list[StagedConcept]], list[MetricsRow]],
    skipped: Callable[[StagedConcept], MetricsRow],
    failed: Callable[[StagedConcept, str], MetricsRow],
    wait_timeout: float,
) -> list[MetricsRow]:
    """Wait for the concepts other live runs hold: a published result becomes a ``skipped`` row (``skipped``), a
    claim let go without a result (that run failed or died) is taken and the concept learned here
    (``learn_now``). A claim still held after ``wait_timeout`` seconds fails its concept (``failed``) with one line."""
    logger, rows = get_run_logger(), []
    for s in waiting:
        logger.info("%s: another run is training it now; this run waits for its result", s.record.concept_id)
    started = last_log = time.monotonic()
    while waiting:
        ours, waiting, published = _claim(claims, out, waiting)
        for s in published:
            rows.append(skipped(s))
            claims.release(s.record.concept_id, s.record.known_digest())
        rows += learn_now(ours) if ours else []
        holders = {s.record.concept_id: claims.holder(s.record.concept_id, s.record.known_digest()) for s in waiting}
        waited = time.monotonic() - started
        if waiting and waited > wait_timeout:
            return rows + [failed(s, _gave_up(s, holders[s.record.concept_id], waited)) for s in waiting]
        if waiting and time.monotonic() - last_log >= 60:
            last_log = time.monotonic()
            for concept_id, holder in holders.items():
                logger.info(
                    "waiting %.0f s for %s, which is training %s", waited, holder and holder.describe(), concept_id
                )
        if waiting:
            time.sleep(CLAIM_POLL_S)
    return rows


def _gave_up(staged: StagedConcept, holder: Claim | None, waited: float) -> str:
    """The one-line error of a concept whose claim another run held past the wait's limit."""
    key = claim_key(staged.record.concept_id, staged.record.known_digest())
    return (
        f"gave up after {waited:.0f} s waiting for {holder.describe() if holder else 'another run'}, which holds the "
        f"claim {key}; it goes when that run ends or {CLAIM_TTL_S:.0f} s after its last renewal "
        "(raise --slot-wait-timeout to wait longer)"
    )


#: no Prefect retries: :func:`flows.child_runs.run_child` runs a dead child again itself, and a retry of this
#: task would start a second flow run beside one that may still be running
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
    """Run ``learn_concept`` for one concept as a flow run of ``deployment`` (on any worker; run again on
    another when it dies, :mod:`flows.child_runs`) and collect the row it left in the output store, with
    what it learned for the scan state. The child skips the concept when its images turn out to have a
    complete result already."""
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
    store, key = open_store(out), rows_key(run_id, record.concept_id)
    rules = ChildRules(heartbeat_timeout=run.child_heartbeat_timeout, wait_timeout=run.child_wait_timeout)
    try:
        child = run_child(deployment, parameters, rules, f"concept {record.concept_id}", lambda: store.exists(key))
    except ChildWaitError as exc:
        return failed_row(run_id, record.concept_id, str(exc), learn, record), None
    try:
        raw = store.get(key)
        return row_from_json(raw), scan_from_json(raw)
    except Exception:  # noqa: BLE001 - the child crashed before writing its row
        message = child.state.message if child.state else "no state"
        return failed_row(
            run_id, record.concept_id, f"flow run {child.name} ended {child.state_name}: {message}", learn, record
        ), None


def _learn_on_deployment(
    catalog: str,
    out: str,
    todo: list[ConceptRecord],
    learn: LearnSettings,
    evaluation: EvalSettings,
    run: RunSettings,
    run_id: str,
    on_done: Callable[[MetricsRow], None],
) -> tuple[list[MetricsRow], dict[str, ConceptState]]:
    """Each concept of ``todo`` as a flow run of ``run.deployment``, ``fan_out_threads(run)`` at a time;
    returns their rows and what they learned for the scan state."""
    rows: list[MetricsRow] = []
    learned: dict[str, ConceptState] = {}
    with ThreadPoolTaskRunner[Any](max_workers=fan_out_threads(run)) as runner, stop_tasks_on_interrupt():
        futures = {
            _submit(
                runner,
                run_concept_deployment,
                deployment=run.deployment,
                catalog=catalog,
                out=out,
                record=record,
                learn=learn,
                evaluation=evaluation,
                run=run,
                run_id=run_id,
            ): record
            for record in todo
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
    return rows, learned


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

    def __init__(self, run_id: str, total: int, logger) -> None:
        self.total, self.logger, self.finished = total, logger, 0
        self.artifact = sync_result(
            create_progress_artifact(
                progress=0.0, key="sstar-run-progress", description=f"concepts finished in run {run_id}"
            )
        )

    def __call__(self, row: MetricsRow) -> None:
        self.finished += 1
        update_progress_artifact(self.artifact, 100.0 * self.finished / max(1, self.total))
        self.logger.info("[%d/%d] %s: %s", self.finished, self.total, row.concept_id, row.status)

    def complete(self) -> None:
        update_progress_artifact(self.artifact, 100.0)


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
    # 3. learn the rest: here, or each concept as a flow run of the deployment
    progress = _Progress(run_id, len(todo), logger)
    work_root = run.work_dir or tempfile.mkdtemp(prefix="sstar-work-")
    records = {r.concept_id: r for r in scan.records}
    try:
        if run.deployment:
            new_rows, learned = _learn_on_deployment(catalog, out, todo, learn, evaluation, run, run_id, progress)
        else:
            new_rows, staged = _learn_locally(
                catalog, out, todo, learn, evaluation, run, run_id, work_root, progress, scan.done, index
            )
            learned = {s.record.concept_id: s.scan for s in staged if s.scan is not None}
            records.update({s.record.concept_id: s.record for s in staged})  # digests and images as read
        rows += new_rows
        check_stop()  # a stopped run writes no row: finished concepts are published, the rest keep their checkpoints
    finally:
        if not run.work_dir:
            shutil.rmtree(work_root, ignore_errors=True)
    # 4. remember the scan (passed whole, not walked: it has one entry per concept), compose, report
    remember_scan(out, passed_whole(scan.state.merged(learned)), passed_whole(scan.previous))
    progress.complete()
    compositions = compose_catalog(catalog, out, run_id, rows, records, learn, evaluation, run)
    summary = publish_run_outputs(out, run_id, rows, compositions, scan.done)
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
