"""A catalog run's concepts learned in this process: staged and published in chunks, pipelined.

Each chunk of ``run.chunk_size`` concepts (whole packs of ``concepts_per_batch``) goes through

    stage-chunk → claims → invert-pack (the chunk's queues) → score-outcomes (per pack) → publish-chunk

and publishing a chunk also writes its metrics rows (one write-once file), so a run killed mid-night keeps
the rows of everything it published. Task runs grow with chunks and packs, not with concepts. The first
chunk's packs train while later chunks are staged: at most :func:`chunks_in_flight` chunks are between
their staging and their publishing, so the work folders, staged images and futures held at any time do
not grow with the catalog (a chunk's work folders go once it is published). One bad concept fails only
itself; a concept another live run is training is waited for at the end (:mod:`tasks.claims`).

The loop runs in the flow's own thread and handles each task's result as it finishes (its done callback
queues it), so a stop request (:mod:`flows.stopping`) is seen within a second and nothing more is written.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from prefect import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from inversion.cancel import check_stop
from storage.metrics import MetricsRow
from storage.scanstate import ConceptState
from tasks.claims import CLAIM_TTL_S, Claim, Claims, claim_key
from tasks.concurrency import give_back_parked_slots
from tasks.invert import invert_pack
from tasks.publish import failed_row, publish_chunk, skipped_row
from tasks.records import ConceptRecord, InversionOutcome, ScoredConcept, StagedConcept
from tasks.score import score_outcomes_task
from tasks.settings import EvalSettings, LearnSettings, RunSettings
from tasks.staging import clean_work, stage_chunk

#: concepts per inversion task, in packs of ``concepts_per_batch``: a longer queue keeps a continuous
#: pack full for longer (stopped concepts hand their slots on); a shorter one starts scoring sooner
#: and bounds what a retried task re-runs
QUEUE_PACKS = 8


def chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def inversion_queues(concepts: list, run: RunSettings) -> list[list]:
    """Split the concepts to learn into the queues of the inversion tasks: one per GPU slot
    (``max_concurrent_inversions``), each at most :data:`QUEUE_PACKS` packs long."""
    longest = run.concepts_per_batch * QUEUE_PACKS
    per_slot = -(-len(concepts) // run.max_concurrent_inversions) if concepts else 1
    return chunks(concepts, max(1, min(longest, per_slot)))


def chunk_length(run: RunSettings) -> int:
    """Concepts per chunk: ``run.chunk_size`` rounded up to whole packs."""
    packs = -(-run.chunk_size // run.concepts_per_batch)
    return packs * run.concepts_per_batch


def chunks_in_flight(run: RunSettings) -> int:
    """Chunks between their staging and their publishing at once: one per GPU slot, and one more staging
    while they train."""
    return run.max_concurrent_inversions + 1


class ConceptsFailed(RuntimeError):
    """Raised at the very end of a run in which some concept failed (everything else was written)."""


@dataclass
class LocalResult:
    """What the local learner leaves: every row it made, those of them not yet in the metrics (the
    concepts other runs held, and every row when chunks do not append), what the scan state may remember
    of the images read, and the records as read (with their digests)."""

    rows: list[MetricsRow] = field(default_factory=list)
    unwritten: list[MetricsRow] = field(default_factory=list)
    scans: dict[str, ConceptState] = field(default_factory=dict)
    records: dict[str, ConceptRecord] = field(default_factory=dict)


@dataclass
class _Chunk:
    """One chunk on its way: its staged concepts, its rows so far, its scored concepts, its tasks in flight."""

    staged: list[StagedConcept] = field(default_factory=list)
    rows: list[MetricsRow] = field(default_factory=list)
    scored: list[ScoredConcept] = field(default_factory=list)
    pending: int = 0


@dataclass(frozen=True)
class LearnContext:
    """What every task of the local learner is given: where, how, and which run."""

    catalog: str
    out: str
    learn: LearnSettings
    evaluation: EvalSettings
    run: RunSettings
    run_id: str
    work_root: str


class _Pipeline:
    """The chunks of one learner and the loop that moves them on (see the module docstring)."""

    def __init__(
        self,
        runner: ThreadPoolTaskRunner[Any],
        claims: Claims,
        ctx: LearnContext,
        on_done: Callable[[MetricsRow], None],
        done: Mapping[str, frozenset[str]],
        index: Mapping[str, dict],
        append: bool,
    ) -> None:
        self.runner, self.claims, self.ctx, self.on_done = runner, claims, ctx, on_done
        self.done, self.index, self.append = done, index, append
        self.result = LocalResult()
        self.theirs: list[StagedConcept] = []  # claimed by another live run: waited for at the end
        self.finished: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.handlers: dict[Any, Callable[[Any], None]] = {}
        self.in_flight = 0

    def submit(self, task_: Any, handle: Callable[[Any], None], **parameters: Any) -> None:
        """Submit ``task_`` and have ``handle`` called with its result (or the exception it ended with)."""
        check_stop()  # no task starts once the run was asked to stop (flows.stopping)
        future = self.runner.submit(task_, parameters)
        self.handlers[future] = handle
        future.add_done_callback(self.finished.put)

    def run(self, todo: Iterator[list[ConceptRecord]]) -> None:
        """Stage every chunk of ``todo`` and carry each through to its rows; returns when all are done."""
        pending = iter(todo)
        more = True
        while True:
            while more and self.in_flight < chunks_in_flight(self.ctx.run):
                records = next(pending, None)
                more = records is not None
                if records is not None:
                    self.stage(records)
            if not self.handlers:
                return
            self.wait_one()

    def wait_one(self) -> None:
        """Handle the next finished task's result; checks for a stop request at least every second."""
        while True:
            check_stop()
            try:
                future = self.finished.get(timeout=1.0)
                break
            except queue.Empty:
                continue
        check_stop()  # a stopped run makes no row from what its tasks ended with
        self.handlers.pop(future)(future.result(raise_on_failure=False))

    def stage(self, records: list[ConceptRecord]) -> None:
        chunk = _Chunk()
        self.in_flight += 1
        self.result.records.update({r.concept_id: r for r in records})
        done = {r.concept_id: sorted(self.done.get(r.concept_id, ())) for r in records}
        self.submit(
            stage_chunk,
            partial(self.staged, chunk, records),
            catalog_uri=self.ctx.catalog,
            records=records,
            work_root=self.ctx.work_root,
            done=done,
        )

    def staged(self, chunk: _Chunk, records: list[ConceptRecord], result: Any) -> None:
        """A chunk is staged: skip what is done, fail what could not be staged, claim and invert the rest."""
        if isinstance(result, BaseException):
            result = [StagedConcept(r, "", "", 0, error=f"ingest failed: {result}") for r in records]
        chunk.staged = result
        ctx, learning = self.ctx, []
        for s in result:
            self.result.records[s.record.concept_id] = s.record  # digests and images as read
            if s.scan is not None:
                self.result.scans[s.record.concept_id] = s.scan
            if s.done:
                index_row = self.index.get(s.record.concept_id)
                chunk.rows.append(skipped_row(ctx.run_id, s.record, ctx.learn, ctx.out, index_row))
            elif s.error is not None:
                chunk.rows.append(failed_row(ctx.run_id, s.record.concept_id, s.error, ctx.learn, s.record))
            else:
                learning.append(s)
        ours, theirs, published = claim(self.claims, ctx.out, learning)
        chunk.rows += [skipped_row(ctx.run_id, s.record, ctx.learn, ctx.out) for s in published]
        self.theirs += theirs
        self.invert(chunk, ours)

    def invert(self, chunk: _Chunk, concepts: list[StagedConcept]) -> None:
        """Invert ``concepts`` of ``chunk`` in queues; a chunk with nothing to learn is published at once."""
        for pack in inversion_queues(concepts, self.ctx.run) if concepts else []:
            chunk.pending += 1
            self.submit(
                invert_pack,
                partial(self.inverted, chunk, pack),
                staged=pack,
                learn=self.ctx.learn,
                run=self.ctx.run,
                out_uri=self.ctx.out,
            )
        if not chunk.pending:
            self.publish(chunk)

    def inverted(self, chunk: _Chunk, queue_: list[StagedConcept], outcomes: Any) -> None:
        """A queue is trained: score it pack by pack (an inversion that raised fails its queue's concepts)."""
        chunk.pending -= 1
        if isinstance(outcomes, BaseException):
            outcomes = [InversionOutcome(s, None, error=f"inversion failed: {outcomes}") for s in queue_]
        for pack in chunks(outcomes, self.ctx.run.concepts_per_batch):  # one batched rendering per pack
            chunk.pending += 1
            ctx = self.ctx
            self.submit(
                score_outcomes_task,
                partial(self.scored, chunk, pack),
                outcomes=pack,
                learn=ctx.learn,
                evaluation=ctx.evaluation,
                run=ctx.run,
                out_uri=ctx.out,
            )

    def scored(self, chunk: _Chunk, pack: list[InversionOutcome], results: Any) -> None:
        chunk.pending -= 1
        if isinstance(results, BaseException):
            ctx = self.ctx
            for outcome in pack:
                record = outcome.staged.record
                error = f"scoring failed: {results}"
                chunk.rows.append(failed_row(ctx.run_id, record.concept_id, error, ctx.learn, record))
        else:
            chunk.scored += results
        if not chunk.pending:
            self.publish(chunk)

    def publish(self, chunk: _Chunk) -> None:
        ctx = self.ctx
        self.submit(
            publish_chunk,
            partial(self.published, chunk),
            scored=chunk.scored,
            rows=chunk.rows,
            out_uri=ctx.out,
            run_id=ctx.run_id,
            learn=ctx.learn,
            append=self.append,
        )

    def published(self, chunk: _Chunk, result: Any) -> None:
        """A chunk is published (and its rows written): count its rows, let go of its claims and work folders."""
        ctx = self.ctx
        if isinstance(result, BaseException):  # its rows may not be in the metrics: written at the end
            error = f"publishing failed: {result}"
            records = [s.inversion.staged.record for s in chunk.scored]
            result = [failed_row(ctx.run_id, r.concept_id, error, ctx.learn, r) for r in records]
            self.result.unwritten += [*chunk.rows, *result]
        elif not self.append:
            self.result.unwritten += [*chunk.rows, *result]
        for row in [*chunk.rows, *result]:
            self.claims.release(row.concept_id, row.digest)
            self.result.rows.append(row)
            self.on_done(row)
        waiting = {id(s) for s in self.theirs}
        clean_work(s for s in chunk.staged if id(s) not in waiting)
        chunk.staged, chunk.scored = [], []
        self.in_flight -= 1

    def learn_staged(self, staged: list[StagedConcept]) -> list[MetricsRow]:
        """Learn concepts staged before (those another run let go of) as one more chunk; their rows."""
        chunk = _Chunk(staged=staged)
        before = len(self.result.rows)
        self.in_flight += 1
        self.invert(chunk, staged)
        self.run(iter(()))
        return self.result.rows[before:]


def claim(
    claims: Claims, out: str, staged: list[StagedConcept]
) -> tuple[list[StagedConcept], list[StagedConcept], list[StagedConcept]]:
    """Split the concepts to learn: those this run claimed, those another live run holds, and those another
    run published after the scan."""
    from storage.results import ResultStore

    results = ResultStore.open(out)
    ours, theirs, published = [], [], []
    for s in staged:
        concept_id, digest = s.record.concept_id, s.record.known_digest()
        if claims.take(concept_id, digest) is not None:
            theirs.append(s)
        elif results.is_complete(concept_id, digest):  # published and let go between the scan and the claim
            claims.release(concept_id, digest)
            published.append(s)
        else:
            ours.append(s)
    return ours, theirs, published


def learn_locally(
    ctx: LearnContext,
    todo: list[ConceptRecord],
    on_done: Callable[[MetricsRow], None],
    done: Mapping[str, frozenset[str]],
    index: Mapping[str, dict] | None = None,
    append: bool = True,
) -> LocalResult:
    """Stage → invert (packed) → score → publish the concepts of ``todo``, chunk by chunk, fanned out on
    ``fan_out_threads(run)`` threads; ``on_done`` is called with each row once it is written.

    ``done`` maps concept ids to digests with a complete result: a concept whose staging finds its digest
    there (identical bytes re-uploaded) becomes a ``skipped`` row (scores from ``index``, the embeddings index
    by concept) instead of being learned. With ``append`` each published chunk writes its rows to the metrics;
    without (a pack run for a catalog run, which writes them), every row comes back ``unwritten``.

    The threads are this run's own task runner rather than the flow decorator's, so that the ``workers``
    parameter holds in deployments too (a flow's decorator runner is fixed at import). A concept is trained
    under this run's claim on it (:mod:`tasks.claims`): one that another live run is training is waited for,
    and its published result becomes a ``skipped`` row here.
    """
    from flows.stopping import stop_tasks_on_interrupt

    run = ctx.run
    runner_threads = ThreadPoolTaskRunner[Any](max_workers=fan_out_threads(run))
    try:
        with runner_threads as runner, Claims(ctx.out, ctx.run_id) as claims, stop_tasks_on_interrupt():
            pipeline = _Pipeline(runner, claims, ctx, on_done, done, index or {}, append)
            pipeline.run(iter(chunks(todo, chunk_length(run))))
            if pipeline.theirs:  # the concepts other runs were training: their results, or learned here
                waited = after_other_runs(claims, ctx, pipeline.theirs, pipeline.learn_staged, run.slot_wait_timeout)
                for row in waited:
                    on_done(row)
                pipeline.result.rows += waited
                pipeline.result.unwritten += waited
    finally:
        give_back_parked_slots()  # the last GPU task's slot, kept for a next task that will not come
    return pipeline.result


def fan_out_threads(run: RunSettings) -> int:
    """Threads running this flow run's tasks: ``run.workers``; when concepts go to a deployment, at
    least the GPU slots, since each thread waits on one child flow run."""
    return max(run.workers, run.max_concurrent_inversions) if run.deployment else run.workers


#: seconds between looks at the claims and results of the concepts other runs are training
CLAIM_POLL_S = 2.0


def after_other_runs(
    claims: Claims,
    ctx: LearnContext,
    waiting: list[StagedConcept],
    learn_now: Callable[[list[StagedConcept]], list[MetricsRow]],
    wait_timeout: float,
) -> list[MetricsRow]:
    """Wait for the concepts other live runs hold: a published result becomes a ``skipped`` row, a claim let go
    without a result (that run failed or died) is taken and the concept learned here (``learn_now``, whose rows
    are written and counted already). A claim still held after ``wait_timeout`` seconds fails its concept with
    one line. Returns the rows made here (not yet written)."""
    logger, rows = get_run_logger(), []
    for s in waiting:
        logger.info("%s: another run is training it now; this run waits for its result", s.record.concept_id)
    started = last_log = time.monotonic()
    while waiting:
        ours, waiting, published = claim(claims, ctx.out, waiting)
        for s in published:
            rows.append(skipped_row(ctx.run_id, s.record, ctx.learn, ctx.out))
        if ours:
            learn_now(ours)
        holders = {s.record.concept_id: claims.holder(s.record.concept_id, s.record.known_digest()) for s in waiting}
        waited = time.monotonic() - started
        if waiting and waited > wait_timeout:
            gave_up = [(s.record, _gave_up(s, holders[s.record.concept_id], waited)) for s in waiting]
            return rows + [failed_row(ctx.run_id, r.concept_id, error, ctx.learn, r) for r, error in gave_up]
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
