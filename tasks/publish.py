"""Tasks that write results: a concept's files (write-once, ``_SUCCESS`` last), metrics rows, the index.

A catalog run publishes in chunks (:func:`publish_chunk`: one task run for many concepts, each published as
:func:`publish_concept` does, then the chunk's metrics rows appended as one write-once Parquet file), so its task
runs grow with chunks, not concepts, and a run killed mid-night keeps the rows of what it published.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypedDict

from prefect import get_run_logger, task

from common.filenames import GRID_FILENAME, SCORES_FILENAME, TRAINING_STRIP_FILENAME, word_filename
from inversion.model.info import family_or_none
from storage.metrics import METRICS_DIR, MetricsRow, Status, append_metrics, update_embeddings_index
from storage.results import ResultStore
from storage.scanstate import ConceptState
from storage.store.open import open_store
from tasks.records import ConceptRecord, ScoredConcept, ScoreSummary
from tasks.retry import RETRY, with_retries
from tasks.settings import LearnSettings


class _IdentityFields(TypedDict):
    """The metrics columns that say which concept, run and settings a row is about."""

    run_id: str
    concept_id: str
    digest: str | None
    token: str | None
    model: str
    model_family: str | None
    steps: int
    vectors: int | None
    lr: float
    relearn_reason: str | None


def _row(status: Status, scores: ScoreSummary, identity: _IdentityFields, **fields: Any) -> MetricsRow:
    """A metrics row: its status, the score columns of ``scores``, which concept it is and the rest of ``fields``."""
    return MetricsRow(
        status=status,
        image_similarity=scores.image_similarity,
        text_similarity=scores.text_similarity,
        baseline_image_similarity=scores.baseline_image_similarity,
        baseline_text_similarity=scores.baseline_text_similarity,
        inversion_lift=scores.inversion_lift,
        **identity,
        **fields,
    )


def _base_row(run_id: str, record: ConceptRecord | None, concept_id: str, learn: LearnSettings) -> _IdentityFields:
    return _IdentityFields(
        run_id=run_id,
        concept_id=concept_id,
        digest=record.digest if record else None,
        token=record.token if record else None,
        model=learn.model,
        model_family=family_or_none(learn.model),
        steps=learn.steps,
        vectors=record.vectors if record else None,
        lr=learn.lr,
        relearn_reason=record.relearn_reason if record else None,
    )


def failed_row(
    run_id: str, concept_id: str, error: str, learn: LearnSettings, record: ConceptRecord | None = None
) -> MetricsRow:
    return MetricsRow(status="failed", error=error, **_base_row(run_id, record, concept_id, learn))


def skipped_row(
    run_id: str, record: ConceptRecord, learn: LearnSettings, out_uri: str, index_row: Mapping[str, Any] | None = None
) -> MetricsRow:
    """The row of a concept whose digest already has a complete result. Its scores come from
    ``index_row`` (the embeddings index's row for the concept) when that is the same result, so a
    run that skips thousands of concepts reads one index, not two objects per concept."""
    results = ResultStore.open(out_uri)
    digest = record.known_digest()
    if index_row is not None and index_row.get("digest") == digest:
        return _row(
            "skipped",
            ScoreSummary.of(index_row),
            _base_row(run_id, record, record.concept_id, learn),
            error=None,
            embedding_uri=index_row.get("embedding_uri"),
            grid_uri=index_row.get("grid_uri"),
        )
    manifest = results.read_manifest(record.concept_id, digest)
    scores = {}
    if manifest is not None and SCORES_FILENAME in manifest.files:
        scores = json.loads(open_store(out_uri).get(results.key(record.concept_id, digest, SCORES_FILENAME)))
    identity = _base_row(run_id, record, record.concept_id, learn)
    return _row(
        "skipped",
        ScoreSummary.of(scores),
        identity,
        error=None,
        embedding_uri=results.uri(record.concept_id, digest, word_filename(record.token, identity["model_family"])),
        grid_uri=results.uri(record.concept_id, digest, GRID_FILENAME)
        if manifest and GRID_FILENAME in manifest.files
        else None,
    )


def publish_concept(scored: ScoredConcept, out_uri: str, run_id: str, learn: LearnSettings) -> MetricsRow:
    """Publish the concept's embeddings, grids, scores and training-image strip write-once, then clear its
    checkpoints.

    A concept that failed upstream publishes nothing and becomes a ``failed`` row.
    """
    inversion = scored.inversion
    record = inversion.staged.record
    error = scored.error or inversion.error
    if error is not None:
        get_run_logger().warning("%s failed: %s", record.concept_id, error)
        return failed_row(run_id, record.concept_id, error, learn, record)
    files = {Path(name).name: Path(name).read_bytes() for name in scored.files_to_publish()}
    strip = Path(inversion.staged.work_dir) / TRAINING_STRIP_FILENAME  # staging's copy of the training images
    if strip.is_file():
        files[strip.name] = strip.read_bytes()
    results = ResultStore.open(out_uri)
    digest = record.known_digest()
    published = results.publish(record.concept_id, digest, files, run_id, replace_incomplete=True)
    results.clear_checkpoints(record.concept_id, digest)
    get_run_logger().info("%s published to %s", record.concept_id, published.prefix_uri)
    identity = _base_row(run_id, record, record.concept_id, learn)
    return _row(
        "ok",
        scored.scores,
        identity,
        error=None,
        final_loss=inversion.final_loss,
        train_seconds=inversion.train_seconds,
        eval_seconds=scored.eval_seconds,
        steps_run=inversion.steps,
        stop_reason=inversion.stop_reason,
        norm_ratio=inversion.norm_ratio,
        embedding_uri=published.uris.get(word_filename(record.token, identity["model_family"])),
        grid_uri=published.uris.get(GRID_FILENAME),
    )


@task(name="publish-chunk", **RETRY)
def publish_chunk(
    scored: list[ScoredConcept], rows: list[MetricsRow], out_uri: str, run_id: str, learn: LearnSettings, append: bool
) -> list[MetricsRow]:
    """Publish each of ``scored`` (see :func:`publish_concept`; a failure becomes that concept's ``failed`` row),
    then, with ``append``, write the chunk's rows (``rows``, made before, and the new ones) as one metrics file.

    Idempotent: a retry republishes nothing that is complete with the same bytes, and the metrics file is named
    by the run and the chunk's concepts and written once. Returns the new rows, in the order of ``scored``."""
    new = []
    for concept in scored:
        record = concept.inversion.staged.record
        try:
            new.append(with_retries(partial(publish_concept, concept, out_uri, run_id, learn)))
        except Exception as exc:  # noqa: BLE001 - one bad concept fails only itself
            new.append(failed_row(run_id, record.concept_id, f"publishing failed: {exc}", learn, record))
    if append:
        append_rows(out_uri, [*rows, *new])
    return new


def append_rows(out_uri: str, rows: Sequence[MetricsRow]) -> list[str]:
    """Append ``rows`` to the metrics, one write-once file per run date (a run that goes past midnight has rows
    of two dates); returns the files' URIs (none when there are no rows)."""
    by_date: dict[date | None, list[MetricsRow]] = {}
    for row in rows:
        by_date.setdefault(row.run_date, []).append(row)
    return [append_metrics(out_uri, dated) for dated in by_date.values()]


def row_to_json(row: MetricsRow, scan: ConceptState | None = None) -> bytes:
    """A concept flow run's result for the catalog run that launched it: its row, and what the
    catalog's scan state may remember about the images it read (``scan``)."""
    data = row.to_dict()
    data["created_at"] = row.created_at.isoformat()
    data["run_date"] = row.run_date.isoformat() if row.run_date else None
    return json.dumps({"row": data, "scan": [scan.listing, scan.images] if scan else None}).encode()


def row_from_json(raw: bytes) -> MetricsRow:
    """The row of :func:`row_to_json`."""
    data = json.loads(raw)["row"]
    data["created_at"] = datetime.fromisoformat(data["created_at"])
    data["run_date"] = date.fromisoformat(data["run_date"]) if data.get("run_date") else None
    return MetricsRow(**data)


def scan_from_json(raw: bytes) -> ConceptState | None:
    """The scan state entry of :func:`row_to_json` (``None`` when the child read no image)."""
    scan = json.loads(raw).get("scan")
    return ConceptState(*scan) if scan else None


def rows_key(run_id: str, concept_id: str) -> str:
    """Where a concept flow run leaves its row for the catalog run that launched it."""
    return f"runs/{run_id}/rows/{concept_id}.json"


@task(name="write-metrics", **RETRY)
def write_metrics(
    out_uri: str,
    rows: list[MetricsRow],
    published: Mapping[str, frozenset[str]] | None = None,
    unwritten: list[MetricsRow] | None = None,
) -> str:
    """Append the run's rows not yet in the metrics (``unwritten``; all of ``rows`` when not given) to the Parquet
    metrics dataset (one file per date, named by the run and its concepts, so a retry writes no second copy) and
    merge ``rows`` into the embeddings index (the run's rows only, not the metrics history), reconciled with
    ``published`` (the run's listing of complete results; see :func:`storage.metrics.update_embeddings_index`).
    Returns the URI of the file written (the last, when two dates), or of the metrics folder when none was."""
    uris = append_rows(out_uri, rows if unwritten is None else unwritten)
    update_embeddings_index(out_uri, rows=rows, published=published)
    return uris[-1] if uris else open_store(out_uri).url(METRICS_DIR)
